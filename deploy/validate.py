"""Offline checks of the deploy/ files: YAML, Kubernetes manifests, Compose, Dockerfile, settings.

    .venv/bin/python deploy/validate.py

Needs only the standard library, PyYAML and the project itself (``app.settings`` is imported to
learn which ``MMRAG_*`` names are real settings). Optional tools are used when they are on PATH
and skipped otherwise (nothing is downloaded): hadolint, kubeconform, kubernetes-validate,
check-jsonschema (Compose schema), yamllint, ``kubectl kustomize`` and ``docker compose config``.

Prints every check; exits 1 if any failed.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
KUSTOMIZATION = K8S / "kustomization.yaml"
# In k8s/ but deliberately not in kustomization.yaml (see the comments in those files).
APPLIED_SEPARATELY = {"secret.example.yaml", "ingest-job.yaml"}
ENV_PREFIX = "MMRAG_"
ENV_NAME = re.compile(r"\bMMRAG_[A-Za-z0-9_]*[A-Za-z0-9]")
TOOL_TIMEOUT_S = 120


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checks = 0

    def ok(self, what: str) -> None:
        self.checks += 1
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.checks += 1
        self.problems.append(what)
        print(f"  FAIL  {what}")

    def check(self, condition: bool, what: str) -> bool:
        (self.ok if condition else self.fail)(what)
        return condition

    @staticmethod
    def skip(what: str) -> None:
        print(f"  skip  {what}")

    @staticmethod
    def section(title: str) -> None:
        print(f"\n== {title}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- YAML ----------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def check_yaml(report: Report) -> dict[Path, list[Any]]:
    report.section("YAML: every file under deploy/ parses (multi-document)")
    parsed: dict[Path, list[Any]] = {}
    for path in yaml_files():
        try:
            docs = load_all(path)
        except yaml.YAMLError as exc:
            report.fail(f"{rel(path)}: {exc}")
            continue
        parsed[path] = docs
        report.ok(f"{rel(path)}: {len(docs)} document(s)")
    return parsed


# --- Kubernetes ----------------------------------------------------------------------------


def by_kind(parsed: dict[Path, list[Any]], kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path, docs in parsed.items():
        if path.parent != K8S or path == KUSTOMIZATION:
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == kind:
                yield path, doc


def check_manifest_fields(report: Report, parsed: dict[Path, list[Any]]) -> None:
    for path, docs in parsed.items():
        if path.parent != K8S or path == KUSTOMIZATION:
            continue
        for i, doc in enumerate(docs):
            where = f"{rel(path)}[{i}]"
            if not isinstance(doc, dict):
                report.fail(f"{where}: not a mapping")
                continue
            name = (doc.get("metadata") or {}).get("name")
            missing = [k for k in ("apiVersion", "kind") if not doc.get(k)]
            if not name:
                missing.append("metadata.name")
            report.check(
                not missing,
                f"{where}: {doc.get('kind')}/{name}"
                + (f" missing {', '.join(missing)}" if missing else " has apiVersion/kind/name"),
            )


def check_kustomization(report: Report, parsed: dict[Path, list[Any]]) -> None:
    docs = parsed.get(KUSTOMIZATION) or []
    if not report.check(bool(docs), f"{rel(KUSTOMIZATION)} exists and parses"):
        return
    resources = docs[0].get("resources") or []
    for res in resources:
        report.check((K8S / res).is_file(), f"kustomization resource {res} exists")
    report.check(
        "secret.example.yaml" not in resources,
        "kustomization does not list secret.example.yaml",
    )
    manifests = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    unlisted = manifests - set(resources)
    report.check(
        unlisted <= APPLIED_SEPARATELY,
        f"every other manifest is listed (applied separately: {', '.join(sorted(unlisted))})",
    )


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def check_deployment(report: Report, parsed: dict[Path, list[Any]]) -> None:
    deployments = list(by_kind(parsed, "Deployment"))
    if not report.check(len(deployments) == 1, "exactly one Deployment"):
        return
    _, dep = deployments[0]
    spec = dep.get("spec", {})
    name = dep["metadata"]["name"]
    # The embedded engine's exclusive lock: one pod, never two at once.
    report.check(spec.get("replicas") == 1, f"Deployment/{name}: replicas == 1 (store lock)")
    report.check(
        spec.get("strategy", {}).get("type") == "Recreate",
        f"Deployment/{name}: strategy Recreate (store lock)",
    )
    tpl_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    selector = spec.get("selector", {}).get("matchLabels", {})
    report.check(
        bool(selector) and selector.items() <= tpl_labels.items(),
        f"Deployment/{name}: selector matches the pod template's labels",
    )
    container = (pod_spec(dep).get("containers") or [{}])[0]
    for probe, path in (
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/health"),
        ("startupProbe", None),
    ):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        report.check(
            got is not None and (path is None or got == path),
            f"Deployment/{name}: {probe} on {got}",
        )
    ctx = container.get("securityContext", {})
    report.check(
        ctx.get("readOnlyRootFilesystem") is True
        and pod_spec(dep).get("securityContext", {}).get("runAsNonRoot") is True,
        f"Deployment/{name}: non-root, read-only root filesystem",
    )
    mounts = {m.get("mountPath") for m in container.get("volumeMounts", [])}
    report.check(
        {"/data", "/models", "/tmp"} <= mounts,  # noqa: S108 (mount paths, not temp files)
        f"Deployment/{name}: mounts /data /models /tmp",
    )
    services = [doc for _, doc in by_kind(parsed, "Service")]
    for svc in services:
        sel = svc.get("spec", {}).get("selector", {})
        report.check(
            bool(sel) and sel.items() <= tpl_labels.items(),
            f"Service/{svc['metadata']['name']}: selector matches the Deployment's pods",
        )


def check_k8s_references(report: Report, parsed: dict[Path, list[Any]]) -> None:
    """ConfigMaps, Secrets and claims that the workloads use are defined (or optional/external)."""
    defined = {
        kind: {doc["metadata"]["name"] for _, doc in by_kind(parsed, kind)}
        for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim")
    }
    external_claims = {"mmrag-media"}  # the user's media, named in ingest-job.yaml's comments
    for kind in ("Deployment", "Job"):
        for path, doc in by_kind(parsed, kind):
            spec = pod_spec(doc)
            for vol in spec.get("volumes", []):
                claim = vol.get("persistentVolumeClaim", {}).get("claimName")
                if claim:
                    report.check(
                        claim in defined["PersistentVolumeClaim"] or claim in external_claims,
                        f"{rel(path)}: claim {claim} is defined"
                        + (" (external, user-provided)" if claim in external_claims else ""),
                    )
            for container in spec.get("containers", []):
                for src in container.get("envFrom", []):
                    for key, kind_ref in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                        ref = src.get(key)
                        if ref:
                            report.check(
                                ref["name"] in defined[kind_ref] or ref.get("optional") is True,
                                f"{rel(path)}: {kind_ref} {ref['name']} is defined or optional",
                            )


def check_k8s(report: Report, parsed: dict[Path, list[Any]]) -> None:
    report.section("Kubernetes manifests (deploy/k8s)")
    check_manifest_fields(report, parsed)
    check_kustomization(report, parsed)
    check_deployment(report, parsed)
    check_k8s_references(report, parsed)


# --- Compose -------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_]\w*")


def volume_source(spec: str | dict[str, Any]) -> str:
    """The source part of a volume entry, minding ``:`` inside ``${VAR:-default}``."""
    if isinstance(spec, dict):
        return str(spec.get("source") or "")
    depth = 0
    for i, char in enumerate(spec):
        if spec.startswith("${", i):
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        elif char == ":" and not depth:
            return spec[:i]
    return spec


def check_compose(report: Report, parsed: dict[Path, list[Any]]) -> None:
    report.section(f"Compose ({rel(COMPOSE)})")
    docs = parsed.get(COMPOSE) or []
    if not report.check(bool(docs), f"{rel(COMPOSE)} exists and parses"):
        return
    compose = docs[0]
    services: dict[str, Any] = compose.get("services") or {}
    named_volumes = set((compose.get("volumes") or {}).keys())
    report.check(
        {"api", "ingest", "qdrant"} <= services.keys(), "services api, ingest, qdrant are defined"
    )
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = COMPOSE.parent / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            report.check(context.is_dir(), f"{name}: build context {rel(context.resolve())}/")
            report.check(
                (context / dockerfile).is_file(),
                f"{name}: dockerfile {rel((context / dockerfile).resolve())}",
            )
        for volume in svc.get("volumes", []):
            source = volume_source(volume)
            if not source or _INTERPOLATION.search(source):
                continue  # a user-supplied path (e.g. ${MEDIA_DIR:-./media})
            if source.startswith((".", "/")):
                report.check(
                    (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} exists"
                )
            else:
                report.check(source in named_volumes, f"{name}: volume {source} is declared")
    for name, profile in (("ingest", "tools"), ("qdrant", "server")):
        report.check(
            profile in (services.get(name, {}).get("profiles") or []),
            f"{name}: only under profile {profile!r}",
        )
    report.check(not services.get("api", {}).get("profiles"), "api: runs without a profile")


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def context_copies(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """The sources of each COPY/ADD that reads the build context (not another stage)."""
    copies: list[list[str]] = []
    for kw, args in instructions:
        if kw not in {"COPY", "ADD"} or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        if len(words) >= 2:
            copies.append(words[:-1])
    return copies


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        return []
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip().lstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored_by(path: str, patterns: list[str]) -> str | None:
    """The .dockerignore pattern that excludes ``path`` (or a folder above it), if any."""
    parts = PurePosixPath(path.rstrip("/")).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pattern[3:])
            ):
                return pattern
    return None


def check_copy_sources(report: Report, copies: list[list[str]]) -> None:
    patterns = dockerignore_patterns()
    for sources in copies:
        matched: list[str] = []
        for src in sources:
            if glob.has_magic(src):
                hits = [str(h.relative_to(ROOT)) for h in ROOT.glob(src)]
                matched += hits
                report.ok(f"COPY {src}: pattern, {len(hits)} match(es) now (may be empty)")
            else:
                exists = (ROOT / src).exists()
                matched += [src] if exists else []
                report.check(exists, f"COPY source {src} exists")
        report.check(bool(matched), f"COPY {' '.join(sources)}: at least one source matches")
        for src in matched:
            pattern = ignored_by(src, patterns)
            report.check(
                pattern is None,
                f"COPY source {src} is not excluded by {rel(DOCKERIGNORE)}"
                + (f" (pattern {pattern!r})" if pattern else ""),
            )


def check_dockerfile(report: Report) -> None:
    report.section(f"Dockerfile ({rel(DOCKERFILE)}; build context = repository root)")
    if not report.check(DOCKERFILE.is_file(), f"{rel(DOCKERFILE)} exists"):
        return
    instructions = dockerfile_instructions(DOCKERFILE)
    stages = [args for kw, args in instructions if kw == "FROM"]
    report.check(len(stages) >= 2, f"multi-stage ({len(stages)} FROM)")
    check_copy_sources(report, context_copies(instructions))
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    final = instructions[last_from:]  # the runtime stage
    user = [args for kw, args in final if kw == "USER"]
    report.check(
        bool(user) and not user[-1].startswith(("root", "0")),
        f"runtime stage runs as non-root ({user[-1] if user else 'no USER'})",
    )
    keywords = {kw for kw, _ in final}
    report.check(
        {"HEALTHCHECK", "EXPOSE", "VOLUME", "CMD"} <= keywords, "HEALTHCHECK/EXPOSE/VOLUME/CMD"
    )
    env = dockerfile_env(DOCKERFILE)
    for key, value in (("MMRAG_HTTP__HOST", "0.0.0.0"), ("MMRAG_DATA_DIR", "/data")):  # noqa: S104
        report.check(env.get(key) == value, f"ENV {key}={env.get(key)}")


# --- MMRAG_* names -------------------------------------------------------------------------


def _model_classes(annotation: Any) -> list[type]:
    """The pydantic model classes in an annotation (``Foo``, ``Foo | None``, ...)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _model_classes(arg)]
    return []


def setting_env_names() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from app.settings import Settings

    names: set[str] = set()

    def walk(model: type, prefix: str) -> None:
        for field_name, field in model.model_fields.items():  # type: ignore[attr-defined]
            env = f"{prefix}{field_name}".upper()
            names.add(env)  # a nested section can also be given whole, as JSON
            for sub in _model_classes(field.annotation):
                walk(sub, f"{env}__")

    walk(Settings, ENV_PREFIX)
    return names


def deploy_text_files() -> Iterable[Path]:
    me = Path(__file__).resolve()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.resolve() != me and "__pycache__" not in path.parts:
            yield path


def check_env_names(report: Report) -> None:
    report.section("MMRAG_* names used in deploy/ are real settings (app/settings.py)")
    valid = setting_env_names()
    print(f"  ({len(valid)} valid names from app.settings.Settings)")
    used: dict[str, set[str]] = {}
    for path in deploy_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for name in ENV_NAME.findall(text):
            used.setdefault(name.upper(), set()).add(rel(path))
    for name in sorted(used):
        report.check(name in valid, f"{name} ({', '.join(sorted(used[name]))})")


def dockerfile_env(path: Path) -> dict[str, str]:
    """``ENV KEY=VALUE ...`` pairs of the Dockerfile (``$VAR`` references left as written)."""
    env: dict[str, str] = {}
    for kw, args in dockerfile_instructions(path):
        if kw == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                if sep:
                    env[key] = value
    return env


def settings_accept(env: dict[str, str], env_file: Path | None = None) -> str | None:
    """None when ``Settings`` builds from these variables (and env file), else the error."""
    from pydantic import ValidationError

    from app.settings import Settings

    saved = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)})
    try:
        Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        return str(exc).replace("\n", " | ")
    finally:
        for key in [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)
    return None


def check_settings_values(report: Report, parsed: dict[Path, list[Any]]) -> None:
    report.section("The values given are accepted by Settings (types, ranges, patterns)")
    sources: list[tuple[str, dict[str, str], Path | None]] = [
        (rel(DOCKERFILE) + " ENV", dockerfile_env(DOCKERFILE), None)
    ]
    for kind in ("ConfigMap", "Secret"):
        for path, doc in by_kind(parsed, kind):
            data = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
            sources.append((f"{rel(path)} {kind}/{doc['metadata']['name']}", data, None))
    services = ((parsed.get(COMPOSE) or [{}])[0].get("services")) or {}
    for name, svc in services.items():
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        sources.append((f"{rel(COMPOSE)} {name}.environment", environment, None))
    env_example = DEPLOY / "env.example"
    if env_example.is_file():
        sources.append((rel(env_example) + " (as a .env file)", {}, env_example))
    for label, env, env_file in sources:
        error = settings_accept({k: str(v) for k, v in env.items()}, env_file)
        report.check(error is None, f"{label}" + (f": {error}" if error else ""))


# --- optional external tools ---------------------------------------------------------------


def run_tool(report: Report, label: str, argv: list[str]) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        report.skip(f"{label}: {argv[0]} not installed")
        return
    try:
        proc = subprocess.run(  # noqa: S603 (fixed argv, tool found on PATH)
            [exe, *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        report.fail(f"{label}: timed out after {TOOL_TIMEOUT_S} s")
        return
    if proc.returncode == 0:
        report.ok(label)
        return
    report.fail(f"{label}: exit {proc.returncode}")
    print("\n".join(f"        {line}" for line in (proc.stdout + proc.stderr).splitlines()[-20:]))


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(  # noqa: S603
        [shutil.which("docker") or "docker", "compose", "version"],
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    return proc.returncode == 0


def check_tools(report: Report) -> None:
    report.section("Optional tools (skipped when not installed; nothing is downloaded)")
    manifests = [rel(p) for p in sorted(K8S.glob("*.yaml")) if p != KUSTOMIZATION]
    run_tool(report, "hadolint Dockerfile", ["hadolint", rel(DOCKERFILE)])
    run_tool(report, "kubectl kustomize deploy/k8s", ["kubectl", "kustomize", rel(K8S)])
    run_tool(report, "kubeconform manifests", ["kubeconform", "-strict", "-summary", *manifests])
    run_tool(
        report,
        "kubernetes-validate manifests (strict schemas)",
        ["kubernetes-validate", "--strict", *manifests],
    )
    run_tool(
        report,
        "check-jsonschema compose.yaml against the Compose spec",
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", rel(COMPOSE)],
    )
    run_tool(
        report,
        "yamllint (relaxed, line length 100)",
        [
            "yamllint",
            "-d",
            "{extends: relaxed, rules: {line-length: {max: 100}}}",
            *[rel(p) for p in yaml_files()],
        ],
    )
    if docker_compose_available():
        run_tool(
            report,
            "docker compose config",
            ["docker", "compose", "-f", rel(COMPOSE), "config", "-q"],
        )
    else:
        report.skip("docker compose config: the compose plugin is not installed")


def main() -> int:
    report = Report()
    print(f"validating {rel(DEPLOY)}/ (repository root {ROOT})")
    parsed = check_yaml(report)
    check_k8s(report, parsed)
    check_compose(report, parsed)
    check_dockerfile(report)
    check_env_names(report)
    check_settings_values(report, parsed)
    check_tools(report)
    print(f"\n{report.checks} checks, {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
