"""deploy/ checked offline, with the ecosystem's validators and against app.settings.

No Docker engine, cluster or Qdrant server is needed. What each check proves:

- hadolint (Dockerfile linter): best practices, shell mistakes (ShellCheck), no secret-looking
  ENV/ARG.
- check-jsonschema with the compose-spec JSON schema it vendors (from compose-spec/compose-spec,
  Apache-2.0): both compose files are valid Compose: keys, types, enums such as
  ``depends_on.condition``; a misspelt key is an error.
- kubernetes-validate --strict (Kubernetes OpenAPI schemas bundled in the package): every
  manifest matches its kind's schema for Kubernetes 1.25 and 1.37; unknown fields are errors.
- yamllint: every YAML file is well formed, duplicate keys included (YAML loaders keep the last
  one silently).
- The settings check: every ``MMRAG_*`` name anywhere in deploy/ is a field of
  ``app.settings.Settings``, and what one container really gets (image ENV, env file, compose
  environment; ConfigMap, Secret and env of a pod) builds a ``Settings``: an unknown name or an
  invalid value fails with the file and the variable named.
- The wiring: the pieces point at each other (service names, ports, keys, mounts, probes).

The validators are dev dependencies (pyproject.toml); a missing one fails, it is never skipped.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILES = (DEPLOY / "compose.yaml", DEPLOY / "compose.cluster.yaml")
ENV_EXAMPLE = DEPLOY / "env.example"
HELM_VALUES = K8S / "qdrant-values.yaml"
# Not Kubernetes objects: the kustomization (kustomize's own kind) and the Helm chart's values.
K8S_MANIFESTS = tuple(
    p for p in sorted(K8S.glob("*.yaml")) if p.name not in {"kustomization.yaml", HELM_VALUES.name}
)
KUBERNETES_VERSIONS = ("1.25", "1.37")  # the oldest and newest schemas kubernetes-validate bundles

# Read by `python -m ingestion ingest --via` (the key the client sends), not by Settings.
CLIENT_VARIABLES = frozenset({"MMRAG_API_KEY"})
NAME_PATTERN = re.compile(r"\bMMRAG_[A-Z0-9_]*")


# --------------------------------------------------------------------------------------------
# The settings check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """One variable as a deploy file gives it; ``value`` None: not a literal (``${X:?..}``)."""

    source: str
    where: str
    name: str
    value: str | None


@dataclass(frozen=True)
class Unit:
    """What one container gets, in the order later entries win."""

    label: str
    variables: tuple[EnvVar, ...]


def setting_names() -> dict[str, tuple[str, ...]]:
    """MMRAG_* name -> the field path in Settings (``MMRAG_STORE__URL`` -> ("store", "url"))."""
    names: dict[str, tuple[str, ...]] = {}
    for field, info in Settings.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for sub in section.model_fields:
                names[f"MMRAG_{field}__{sub}".upper()] = (field, sub)
        else:
            names[f"MMRAG_{field}".upper()] = (field,)
    return names


SETTING_NAMES = setting_names()
SECTIONS = frozenset(f"MMRAG_{path[0]}__".upper() for path in SETTING_NAMES.values())


@contextmanager
def mmrag_environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.upper().startswith("MMRAG_")]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_settings(unit: Unit) -> Settings:
    """The Settings a container of ``unit`` would build (raises ValidationError)."""
    env: dict[str, str] = {}
    for var in unit.variables:
        if var.name not in SETTING_NAMES:
            continue
        if var.value is None:
            env.pop(var.name, None)  # set at deploy time to something we cannot see
        else:
            env[var.name] = var.value
    with mmrag_environment(env):
        return Settings(_env_file=None)  # type: ignore[call-arg]


def check_unit(unit: Unit) -> list[str]:
    """Problems with ``unit``, each naming the file, the place and the variable."""
    problems = [
        f"{v.source}: {v.where}: {v.name} is not a setting of app.settings.Settings"
        for v in unit.variables
        if v.name.startswith("MMRAG_")
        and v.name not in SETTING_NAMES
        and v.name not in CLIENT_VARIABLES
    ]
    try:
        build_settings(unit)
    except ValidationError as exc:
        given = {v.name: v for v in unit.variables if v.value is not None}
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            name = "MMRAG_" + "__".join(loc).upper()
            var = given.get(name)
            if var is None:  # a model-level rule (e.g. chunk_overlap < chunk_size)
                problems.append(f"{unit.label}: {'.'.join(loc)}: {error['msg']}")
            else:
                problems.append(f"{var.source}: {var.where}: {name}={var.value!r}: {error['msg']}")
    return problems


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def dockerfile_env() -> tuple[EnvVar, ...]:
    """The runtime stage's ENV (what every container of the image starts with)."""
    parser = DockerfileParser(str(DOCKERFILE))
    return tuple(EnvVar(rel(DOCKERFILE), "ENV", name, value) for name, value in parser.envs.items())


def env_file_entries(path: Path) -> tuple[tuple[EnvVar, ...], tuple[EnvVar, ...]]:
    """(active lines, commented-out ``# MMRAG_X=value`` examples) of an env file."""
    active = tuple(
        EnvVar(rel(path), "active line", name, value) for name, value in dotenv_values(path).items()
    )
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.match(r"#\s*(MMRAG_[A-Z0-9_]+=.*)$", line)
        if match:
            ((name, value),) = dotenv_values(stream=io.StringIO(match.group(1))).items()
            examples.append(EnvVar(rel(path), f"line {number} (commented)", name, value))
    return active, tuple(examples)


def compose_value(value: object) -> str | None:
    """A compose environment value as the container sees it, or None when interpolated."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if "$" not in text:
        return text
    default = re.fullmatch(r"\$\{\w+:?-([^}$]*)\}", text)
    return default.group(1) if default else None


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())  # PyYAML resolves the `<<: *anchor` merges
    assert isinstance(data, dict)
    return data


def service_environment(path: Path, name: str, service: Mapping[str, Any]) -> tuple[EnvVar, ...]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(
            item.split("=", 1) if "=" in item else (item, None) for item in environment
        )
    return tuple(
        EnvVar(rel(path), f"services.{name}.environment", key, compose_value(value))
        for key, value in environment.items()
    )


def is_app_image(service: Mapping[str, Any]) -> bool:
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


def compose_units() -> Iterator[Unit]:
    active, _ = env_file_entries(ENV_EXAMPLE)  # compose's env_file: .env, copied from it
    for path in COMPOSE_FILES:
        for name, service in load_compose(path)["services"].items():
            base = dockerfile_env() + active if is_app_image(service) else ()
            yield Unit(f"{rel(path)}: {name}", base + service_environment(path, name, service))


def env_example_units() -> Iterator[Unit]:
    active, examples = env_file_entries(ENV_EXAMPLE)
    yield Unit(f"{rel(ENV_EXAMPLE)}: active lines", dockerfile_env() + active)
    for example in examples:
        yield Unit(f"{rel(ENV_EXAMPLE)}: {example.where}", dockerfile_env() + active + (example,))


def k8s_documents(paths: Iterable[Path] = K8S_MANIFESTS) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def k8s_sources() -> tuple[dict[str, tuple[EnvVar, ...]], dict[str, tuple[EnvVar, ...]]]:
    """ConfigMaps and Secrets by name, as variables."""
    config_maps: dict[str, tuple[EnvVar, ...]] = {}
    secrets: dict[str, tuple[EnvVar, ...]] = {}
    for path, doc in k8s_documents():
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            config_maps[name] = tuple(
                EnvVar(rel(path), f"ConfigMap {name}", k, str(v))
                for k, v in (doc.get("data") or {}).items()
            )
        elif doc["kind"] == "Secret":
            values = dict(doc.get("stringData") or {})
            values |= {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            secrets[name] = tuple(
                EnvVar(rel(path), f"Secret {name}", k, v) for k, v in values.items()
            )
    return config_maps, secrets


def pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        return doc["spec"]["template"]["spec"]
    return None


def container_unit(path: Path, doc: Mapping[str, Any], container: Mapping[str, Any]) -> Unit:
    config_maps, secrets = k8s_sources()
    label = f"{rel(path)}: {doc['kind']} {doc['metadata']['name']}, container {container['name']}"
    variables = list(dockerfile_env())
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or source.get("secretRef")
        known = config_maps if "configMapRef" in source else secrets
        variables.extend(known.get(ref["name"], ()))
    lookups = {"configMapKeyRef": config_maps, "secretKeyRef": secrets}
    for entry in container.get("env") or []:
        value = entry.get("value")
        for ref_kind, ref in (entry.get("valueFrom") or {}).items():
            found = [
                v for v in lookups.get(ref_kind, {}).get(ref["name"], ()) if v.name == ref["key"]
            ]
            value = found[0].value if found else None
        variables.append(EnvVar(rel(path), label, entry["name"], value))
    return Unit(label, tuple(variables))


def k8s_units() -> Iterator[Unit]:
    for path, doc in k8s_documents():
        spec = pod_spec(doc)
        if spec is not None:
            for container in spec["containers"]:
                yield container_unit(path, doc, container)
    config_maps, secrets = k8s_sources()
    for name, variables in (config_maps | secrets).items():
        yield Unit(f"{name} (on its own)", variables)


def all_units() -> list[Unit]:
    return [
        Unit(f"{rel(DOCKERFILE)}: ENV", dockerfile_env()),
        *env_example_units(),
        *compose_units(),
        *k8s_units(),
    ]


def names_in_text() -> list[str]:
    """Every MMRAG_* token anywhere under deploy/ (comments and the README too)."""
    problems = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for token in NAME_PATTERN.findall(line):
                if token == "MMRAG_" or token in SETTING_NAMES or token in CLIENT_VARIABLES:
                    continue
                if token.endswith("__") and token in SECTIONS:
                    continue  # a section named as a prefix: MMRAG_STORE__*
                problems.append(f"{rel(path)}:{number}: {token} is not a setting")
    return problems


def test_every_mmrag_variable_in_deploy_is_a_valid_setting() -> None:
    units = all_units()
    problems = [p for unit in units for p in check_unit(unit)] + names_in_text()
    assert not problems, "\n".join(problems)
    # Non-vacuous: the parsers found what each file sets.
    labels = {u.label for u in units}
    assert {
        "deploy/compose.yaml: api",
        "deploy/compose.cluster.yaml: api",
        "deploy/k8s/deployment.yaml: Deployment mmrag-api, container api",
        "deploy/k8s/ingest-job.yaml: Job mmrag-ingest, container ingest",
        "deploy/env.example: active lines",
    } <= labels
    assert sum(len(u.variables) for u in units) > 100


def unit(label: str) -> Unit:
    return next(u for u in all_units() if u.label == label)


def test_compose_builds_server_mode_settings() -> None:
    one = build_settings(unit("deploy/compose.yaml: api"))
    assert one.store.backend == "server"
    assert one.store.url == "http://qdrant:6333"
    assert one.store.dashboard == "http://localhost:6333/dashboard"
    assert one.http.ingest_roots == (Path("/media"),)
    assert one.http.host == "0.0.0.0"  # from the image: compose requires API keys for it
    assert one.data_dir == Path("/data")
    cluster = build_settings(unit("deploy/compose.cluster.yaml: api"))
    assert cluster.store.url == "http://qdrant-0:6333"
    assert (cluster.store.shard_number, cluster.store.replication_factor) == (6, 2)
    assert cluster.store.write_consistency_factor == 1


def test_k8s_builds_server_mode_settings() -> None:
    api = build_settings(unit("deploy/k8s/deployment.yaml: Deployment mmrag-api, container api"))
    assert api.store.backend == "server"
    assert api.store.url == "http://qdrant.qdrant.svc.cluster.local:6333"
    assert api.store.api_key is not None  # from the mmrag-store Secret
    assert (api.store.shard_number, api.store.replication_factor) == (6, 2)
    assert len(api.http.api_keys) == 1
    assert api.http.ingest_roots == (Path("/media"),)


def test_the_check_names_the_file_and_the_variable() -> None:
    bad = Unit(
        "example",
        (
            EnvVar("deploy/x.yaml", "services.api.environment", "MMRAG_STORE__SHARDS", "3"),
            EnvVar("deploy/x.yaml", "services.api.environment", "MMRAG_STORE__SHARD_NUMBER", "0"),
            EnvVar("deploy/x.yaml", "services.api.environment", "MMRAG_STORE__BACKEND", "cloud"),
            EnvVar("deploy/x.yaml", "services.api.environment", "MMRAG_API_KEY", "client-only"),
        ),
    )
    problems = check_unit(bad)
    assert len(problems) == 3, problems
    assert problems[0] == (
        "deploy/x.yaml: services.api.environment: MMRAG_STORE__SHARDS is not a setting of "
        "app.settings.Settings"
    )
    assert any(
        p.startswith("deploy/x.yaml: services.api.environment: MMRAG_STORE__SHARD_NUMBER='0': ")
        for p in problems
    )
    assert any("MMRAG_STORE__BACKEND='cloud'" in p for p in problems)
    assert compose_value("${X:-7}") == "7"
    assert compose_value("${X:?set X}") is None
    assert compose_value("${A:-${B}}") is None


# --------------------------------------------------------------------------------------------
# The validators
# --------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(
            f"{name} is not installed next to {sys.executable}: run `make venv` (dev extra)"
        )
    return str(path)


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "info", rel(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_compose_files_match_the_compose_spec() -> None:
    files = [rel(p) for p in COMPOSE_FILES]
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    files = [rel(p) for p in K8S_MANIFESTS]
    result = run(tool("kubernetes-validate"), "--strict", "-k", version, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    for path, doc in k8s_documents():
        resource = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        assert f"{rel(path)} passed for resource {resource} against version {version}" in (
            result.stdout
        )
    assert "WARN" not in result.stdout


def test_yaml_files_pass_yamllint() -> None:
    result = run(tool("yamllint"), "--strict", "-c", "deploy/.yamllint.yaml", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_validators_catch_mistakes(tmp_path: Path) -> None:
    """Each tool, run as above, fails on a typical mistake: the checks are not vacuous."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN apt-get install -y curl\n")
    result = run(tool("hadolint"), "--failure-threshold", "info", str(dockerfile))
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image

    compose = tmp_path / "compose.yaml"
    compose.write_text(
        (DEPLOY / "compose.yaml").read_text().replace("service_healthy", "healthy", 1)
    )
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose))
    assert result.returncode != 0
    assert "'healthy' is not one of" in result.stdout

    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        (K8S / "deployment.yaml").read_text().replace("readinessProbe", "readynessProbe")
    )
    result = run(tool("kubernetes-validate"), "--strict", str(manifest))
    assert result.returncode != 0
    assert "'readynessProbe' was unexpected" in result.stdout

    duplicated = tmp_path / "values.yaml"
    duplicated.write_text("replicaCount: 3\nreplicaCount: 1\n")
    result = run(
        tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(duplicated)
    )
    assert result.returncode != 0
    assert "key-duplicates" in result.stdout


# --------------------------------------------------------------------------------------------
# The wiring
# --------------------------------------------------------------------------------------------


def qdrant_default_tag(image: str) -> str:
    match = re.fullmatch(r"qdrant/qdrant:\$\{QDRANT_TAG:-(v\d+\.\d+\.\d+)\}", image)
    assert match, f"{image}: pin qdrant/qdrant to a release"
    return match.group(1)


def interpolated_name(value: str) -> str:
    match = re.match(r"\$\{(\w+)", value)
    assert match, value
    return match.group(1)


def check_compose_project(compose: Mapping[str, Any]) -> None:
    """What compose's loader would refuse: unknown depends_on targets, undeclared volumes."""
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"


def check_ingest_through_api(compose: Mapping[str, Any]) -> None:
    api, ingest = compose["services"]["api"], compose["services"]["ingest"]
    assert ingest["entrypoint"][-2:] == ["--via", "http://api:8000"]
    assert api["ports"][0].endswith(":8000")  # the image's MMRAG_HTTP__PORT
    assert "tools" in ingest["profiles"]
    assert ingest["depends_on"]["api"]["condition"] == "service_healthy"
    media = [v for v in ingest["volumes"] if v.endswith(":ro")]
    assert len(media) == 1, ingest["volumes"]
    assert media[0] in api["volumes"]  # same source, same path, read-only in both
    root = media[0].split(":")[-2]
    assert api["environment"]["MMRAG_HTTP__INGEST_ROOTS"] == root
    assert ingest["command"] == [root]
    assert interpolated_name(ingest["environment"]["MMRAG_API_KEY"]) == "MMRAG_API_KEY"


def test_compose_runs_the_api_on_a_qdrant_server() -> None:
    compose = load_compose(DEPLOY / "compose.yaml")
    check_compose_project(compose)
    check_ingest_through_api(compose)
    qdrant, api = compose["services"]["qdrant"], compose["services"]["api"]
    qdrant_default_tag(qdrant["image"])
    key = interpolated_name(qdrant["environment"]["QDRANT__SERVICE__API_KEY"])
    assert interpolated_name(api["environment"]["MMRAG_STORE__API_KEY"]) == key
    assert {p.rsplit(":", 2)[-1] for p in qdrant["ports"]} == {"6333", "6334"}
    assert "qdrant_storage:/qdrant/storage" in qdrant["volumes"]
    assert "/readyz" in " ".join(qdrant["healthcheck"]["test"])
    assert api["depends_on"] == {"qdrant": {"condition": "service_healthy"}}
    assert api["environment"]["MMRAG_STORE__BACKEND"] == "server"


def test_compose_cluster_runs_three_qdrant_peers() -> None:
    compose = load_compose(DEPLOY / "compose.cluster.yaml")
    check_compose_project(compose)
    check_ingest_through_api(compose)
    services = compose["services"]
    nodes = sorted(n for n in services if n.startswith("qdrant-"))
    assert nodes == ["qdrant-0", "qdrant-1", "qdrant-2"]
    keys = set()
    for node in nodes:
        service = services[node]
        env = service["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__CLUSTER__P2P__PORT"] == "6335"
        keys.add(interpolated_name(env["QDRANT__SERVICE__API_KEY"]))
        assert not any(p.endswith(":6335") for p in service.get("ports", [])), "p2p is internal"
        assert f"{node}:/qdrant/storage" in service["volumes"]
        qdrant_default_tag(service["image"])
    assert services["qdrant-0"]["command"] == ["./qdrant", "--uri", "http://qdrant-0:6335"]
    for node in nodes[1:]:
        assert services[node]["command"] == [
            "./qdrant",
            "--bootstrap",
            "http://qdrant-0:6335",
            "--uri",
            f"http://{node}:6335",
        ]
        assert services[node]["depends_on"]["qdrant-0"]["condition"] == "service_healthy"
    api = services["api"]
    keys.add(interpolated_name(api["environment"]["MMRAG_STORE__API_KEY"]))
    assert len(keys) == 1, keys
    assert set(api["depends_on"]) == set(nodes)


def test_one_qdrant_release_everywhere() -> None:
    tags = {
        qdrant_default_tag(service["image"])
        for path in COMPOSE_FILES
        for name, service in load_compose(path)["services"].items()
        if name.startswith("qdrant")
    }
    values = yaml.safe_load(HELM_VALUES.read_text())
    tags.add(values["image"]["tag"])
    assert len(tags) == 1, tags
    assert f"QDRANT_TAG={tags.pop()}" in ENV_EXAMPLE.read_text()


def test_helm_values_make_a_replicated_cluster() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["replicaCount"] == 3
    assert values["config"]["cluster"]["enabled"] is True
    assert values["config"]["cluster"]["p2p"]["port"] == 6335
    assert values["persistence"]["size"]
    ref = values["apiKey"]["valueFrom"]["secretKeyRef"]
    secret = next(
        doc
        for _, doc in k8s_documents([K8S / "secret.example.yaml"])
        if doc["metadata"]["name"] == ref["name"]
    )
    assert secret["metadata"]["namespace"] == "qdrant"
    assert ref["key"] in secret["stringData"]
    assert values["podDisruptionBudget"] == {"enabled": True, "maxUnavailable": 1}
    # The API's URL is the chart's Service: <release>.<namespace>, release "qdrant".
    config = next(doc for _, doc in k8s_documents() if doc["kind"] == "ConfigMap")
    assert config["data"]["MMRAG_STORE__URL"].startswith("http://qdrant.qdrant.svc.")


def workloads() -> dict[str, Mapping[str, Any]]:
    return {doc["kind"]: doc for _, doc in k8s_documents() if pod_spec(doc) is not None}


def test_k8s_objects_refer_to_each_other() -> None:
    docs = [doc for _, doc in k8s_documents()]
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for doc in workloads().values():
        spec = pod_spec(doc)
        assert spec is not None
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in defined, claim
        for container in spec["containers"]:
            for source in container.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        assert (kind, source[key]["name"]) in defined, source
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed <= {p.name for p in K8S_MANIFESTS}
    assert not listed & {"secret.example.yaml", "ingest-job.yaml", HELM_VALUES.name}
    assert all(d["metadata"].get("namespace") in {"mmrag", "qdrant", None} for d in docs)


def test_k8s_api_probes_service_and_ingest_job() -> None:
    deployment, job = workloads()["Deployment"], workloads()["Job"]
    api = deployment["spec"]["template"]["spec"]["containers"][0]
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    port = api["ports"][0]
    assert api["readinessProbe"]["httpGet"]["port"] == port["name"]
    service = next(doc for _, doc in k8s_documents() if doc["kind"] == "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    service_port = service["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]
    ingest = job["spec"]["template"]["spec"]["containers"][0]
    via = ingest["args"][ingest["args"].index("--via") + 1]
    expected = f"http://{service['metadata']['name']}"
    assert via == (expected if service_port["port"] == 80 else f"{expected}:{service_port['port']}")
    config = next(doc for _, doc in k8s_documents() if doc["kind"] == "ConfigMap")
    root = config["data"]["MMRAG_HTTP__INGEST_ROOTS"]
    for container in (api, ingest):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[root]["readOnly"] is True
        assert mounts[root]["name"] == "media"
    assert ingest["args"][-1] == root
    assert ingest["env"][0]["name"] == "MMRAG_API_KEY"


def test_dockerfile_builds_a_non_root_image_with_a_healthcheck() -> None:
    parser = DockerfileParser(str(DOCKERFILE))
    instructions = parser.structure
    runtime = instructions[
        max(i for i, x in enumerate(instructions) if x["instruction"] == "FROM") :
    ]
    user = [x["value"] for x in runtime if x["instruction"] == "USER"]
    assert user == ["${UID}:${GID}"]
    assert "ARG UID=10001" in DOCKERFILE.read_text()
    healthcheck = [x["value"] for x in runtime if x["instruction"] == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    assert "/health" in healthcheck[0]
    assert "ARG TORCH_VARIANT=cpu" in DOCKERFILE.read_text()
    secretish = re.compile(r"KEY|TOKEN|SECRET|PASSWORD")
    baked = [v.name for v in dockerfile_env() if secretish.search(v.name)]
    assert not baked, f"secrets must come at run time, not from the image: {baked}"
    # Every COPY from the build context exists and is not excluded by the .dockerignore.
    ignored = {
        line.strip().rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for copy in (x for x in instructions if x["instruction"] == "COPY"):
        if "--from" in copy["value"]:
            continue
        for source in copy["value"].split()[:-1]:
            assert list(ROOT.glob(source)), f"COPY {source}: nothing in the build context"
            assert source.split("/")[0] not in ignored, f"COPY {source} is .dockerignored"
