"""What a hostile or careless user tries: links out of the library, swapped files, no key,
traversal in ids and names, huge images, a data directory inside the library, unreadable
folders. Real engine, real models, real app."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from PIL import Image
from pydantic import ValidationError

from app.adapters.edge_store import EdgeCollection
from app.core.errors import ConfigurationError
from app.core.ids import sha256_file
from app.core.indexing import embed_segments
from app.http.app import Models, check_exposure, create_app
from app.settings import PROJECT_ROOT, Settings
from ingestion.pipeline import IngestionPipeline, IngestReport, IngestRequest, Outcome
from ingestion.readers import read_options_for, read_text
from tests.conftest import make_settings

SECRET = "root:$6$daemon:secret shadow entry for the root daemon account\n"
KEY = "k" * 24
OTHER_KEY = "o" * 24


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder that is not part of any library, holding a secret."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "shadow.txt").write_text(SECRET)
    return folder


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("The espresso machine is descaled every Friday morning.\n")
    (root / "sub" / "plants.md").write_text("# Plants\nThe fern is watered on Mondays.\n")
    return root


def sources(collection: EdgeCollection) -> set[str]:
    return {a.source for a in collection.indexed_assets()}


# -- ingestion: links that leave the library --------------------------------------------------


def test_links_out_of_the_library_are_refused_and_reported(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    lib: Path,
    outside: Path,
) -> None:
    (lib / "n.md").symlink_to(outside / "shadow.txt")
    (lib / "escape").symlink_to(outside, target_is_directory=True)
    (lib / "broken.txt").symlink_to(lib / "nowhere.txt")
    (lib / "alias.txt").symlink_to(lib / "notes.txt")  # inside the root: followed, stored once

    report = ingest(lib)

    failed = {Path(r.path).name: r.reason for r in report.failed}
    assert set(failed) == {"n.md", "escape", "broken.txt"}
    assert "outside the library" in (failed["n.md"] or "")
    assert "outside the library" in (failed["escape"] or "")
    assert "broken" in (failed["broken.txt"] or "")
    assert not report.ok
    stored = sources(open_collection("default"))
    assert stored == {str(lib / "notes.txt"), str(lib / "sub" / "plants.md")}
    assert all(str(outside) not in r.path for r in report.results)


def test_a_file_given_by_name_may_not_link_outside_its_folder(
    ingest: Callable[..., IngestReport], lib: Path, outside: Path
) -> None:
    (lib / "n.md").symlink_to(outside / "shadow.txt")
    report = ingest(lib / "n.md")
    assert [(Path(r.path).name, r.outcome) for r in report.results] == [("n.md", Outcome.FAILED)]


def test_escaped_sources_stored_by_older_versions_are_removed(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    settings: Settings,
    clip: Any,
    text_model: Any,
    lib: Path,
    outside: Path,
) -> None:
    """A collection written before links were checked holds /outside/shadow (no library root)."""
    secret = outside / "shadow.txt"
    (lib / "n.md").symlink_to(secret)
    prepared = read_text(
        secret, sha256_file(secret), read_options_for(settings, "default"), root=secret.parent
    )
    legacy = dataclasses.replace(prepared.asset, root=None)
    prepared = dataclasses.replace(
        prepared,
        asset=legacy,
        segments=tuple(dataclasses.replace(s, asset=legacy) for s in prepared.segments),
    )
    collection = open_collection("default")
    collection.upsert(embed_segments([prepared], clip, text_model))
    assert str(secret) in sources(collection)

    report = ingest(lib)  # no --sync needed

    removed = [r for r in report.results if r.outcome is Outcome.REMOVED]
    assert [r.path for r in removed] == [str(secret)]
    assert "leads outside the library" in (removed[0].reason or "")
    assert str(secret) not in sources(collection)


def test_another_library_is_not_touched_by_a_link_into_it(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    lib: Path,
    outside: Path,
) -> None:
    assert ingest(outside).ok  # the outside folder is a library of its own
    (lib / "n.md").symlink_to(outside / "shadow.txt")
    ingest(lib)
    assert str(outside / "shadow.txt") in sources(open_collection("default"))


def test_the_data_directory_inside_the_library_is_never_ingested(
    clip: Any, text_model: Any, lib: Path
) -> None:
    data = lib / "data"
    shutil.copytree(PROJECT_ROOT / "prompts", data / "collections" / "x")  # looks like text
    settings = make_settings(data)
    pipeline = IngestionPipeline(None, clip, text_model, read_options_for(settings, "default"))
    for _ in range(2):
        report = pipeline.run(IngestRequest(paths=(lib,), dry_run=True, exclude=(data,)))
        planned = sorted(Path(r.path).name for r in report.results)
        assert planned == ["notes.txt", "plants.md"]
        assert report.unsupported == []
        assert any("data directory" in w for w in report.warnings)
    inside = pipeline.run(IngestRequest(paths=(data,), dry_run=True, exclude=(data,)))
    assert inside.results == []


# -- serving: the file must still be the one ingested -----------------------------------------


@pytest.fixture
def served(
    ingest: Callable[..., IngestReport],
    settings: Settings,
    store: Any,
    clip: Any,
    text_model: Any,
    lib: Path,
) -> Iterator[tuple[TestClient[Any], dict[str, str]]]:
    assert ingest(lib).ok
    store.close()  # the app opens the collection itself
    app = create_app(settings, models=Models(clip=clip, text=text_model))
    with TestClient(app=app) as client:
        ids = {
            Path(h["source"]).name: h["asset_id"]
            for h in client.post("/v1/search", json={"query": "notes plants", "top_k": 10}).json()[
                "hits"
            ]
        }
        yield client, ids


def test_hits_show_library_paths_never_server_paths(
    served: tuple[TestClient[Any], dict[str, str]], lib: Path
) -> None:
    client, ids = served
    body = client.post("/v1/search", json={"query": "fern watered", "top_k": 5}).json()
    assert {h["source"] for h in body["hits"]} == {"lib/notes.txt", "lib/sub/plants.md"}
    asset = client.get(f"/v1/assets/{ids['plants.md']}").json()
    assert asset["source"] == "lib/sub/plants.md"
    assert asset["file_name"] == "plants.md"
    assert str(lib) not in client.post("/v1/ask", json={"question": "fern watered?"}).text
    prefix = client.post(
        "/v1/search",
        json={"query": "fern", "filters": {"source_prefix": "lib/sub/"}},
    ).json()
    assert [h["source"] for h in prefix["hits"]] == ["lib/sub/plants.md"]


def test_content_swapped_for_a_link_is_not_served(
    served: tuple[TestClient[Any], dict[str, str]], lib: Path, outside: Path
) -> None:
    client, ids = served
    url = f"/v1/assets/{ids['notes.txt']}/content"
    assert client.get(url).text.startswith("The espresso machine")
    notes = lib / "notes.txt"
    stat = notes.stat()
    notes.unlink()
    notes.symlink_to(outside / "shadow.txt")
    response = client.get(url)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "lib/notes.txt" in response.json()["detail"]
    assert "shadow" not in response.text
    assert str(lib) not in response.text
    # Even a target of the very same size and time is refused: a link is a link.
    shadow = outside / "shadow.txt"
    shadow.write_text("x" * stat.st_size)
    os.utime(shadow, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert client.get(url).status_code == 409


def test_content_behind_a_swapped_folder_is_not_served(
    served: tuple[TestClient[Any], dict[str, str]], lib: Path, outside: Path
) -> None:
    client, ids = served
    original = lib / "sub" / "plants.md"
    fake = outside / "plants.md"
    fake.write_bytes(original.read_bytes().replace(b"fern", b"FERN"))
    st = original.stat()
    os.utime(fake, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same time
    (lib / "sub").rename(lib / "sub-old")
    (lib / "sub").symlink_to(outside, target_is_directory=True)
    response = client.get(f"/v1/assets/{ids['plants.md']}/content")
    assert response.status_code == 409, response.text
    assert "FERN" not in response.text


def test_changed_and_deleted_files_are_not_served(
    served: tuple[TestClient[Any], dict[str, str]], lib: Path
) -> None:
    client, ids = served
    notes = lib / "notes.txt"
    notes.write_text("The espresso machine is descaled every Monday morning!\n")  # same size
    response = client.get(f"/v1/assets/{ids['notes.txt']}/content")
    assert response.status_code == 409
    assert "changed since it was ingested" in response.json()["detail"]
    (lib / "sub" / "plants.md").unlink()
    gone = client.get(f"/v1/assets/{ids['plants.md']}/content")
    assert gone.status_code == 404
    assert "lib/sub/plants.md" in gone.json()["detail"]
    assert str(lib) not in gone.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/assets/../../etc/passwd/content",
        "/v1/assets/..%2F..%2Fetc%2Fpasswd/content",
        "/v1/assets/%2e%2e/content",
        "/v1/assets/0123456789abcdef0123456789abcdeg/content",
        "/v1/collections/..%2Fdata",
        "/v1/collections/.hidden",
        "/v1/assets/0123456789abcdef0123456789abcdef/content?collection=../default",
        "/v1/assets/0123456789abcdef0123456789abcdef/thumbnail?collection=%2Fetc",
    ],
)
def test_traversal_in_ids_and_collection_names_is_refused(
    served: tuple[TestClient[Any], dict[str, str]], path: str
) -> None:
    client, _ = served
    response = client.get(path)
    assert 400 <= response.status_code < 500
    assert "root:" not in response.text


# -- API keys --------------------------------------------------------------------------------


@pytest.fixture
def keyed(
    library_settings: Callable[..., Settings], clip: Any, text_model: Any
) -> Iterator[TestClient[Any]]:
    app = create_app(
        library_settings(http={"api_keys": f"{KEY},{OTHER_KEY}"}),
        models=Models(clip=clip, text=text_model),
    )
    with TestClient(app=app) as client:
        yield client


@pytest.fixture
def library_settings(tmp_path: Path) -> Callable[..., Settings]:
    def _make(**overrides: Any) -> Settings:
        return make_settings(tmp_path / "data", **overrides)

    return _make


def test_keys_are_required_except_for_health_and_ready(keyed: TestClient[Any]) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 200
    for path in ("/schema/openapi.json", "/v1/collections/default"):
        response = keyed.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "API key is required" in response.json()["detail"]
    post = keyed.post("/v1/search", json={"query": "x"})
    assert post.status_code == 401


def test_wrong_keys_are_refused_and_either_header_works(keyed: TestClient[Any]) -> None:
    wrong = keyed.get("/schema/openapi.json", headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401
    assert "invalid_token" in wrong.headers["www-authenticate"]
    assert keyed.get("/schema/openapi.json", headers={"X-API-Key": "k"}).status_code == 401
    bearer = keyed.get("/schema/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert "/v1/search" in bearer.json()["paths"]
    other = keyed.get("/v1/collections/default", headers={"X-API-Key": OTHER_KEY})
    assert other.status_code == 404  # past the key check: the collection does not exist yet


def test_binding_beyond_loopback_needs_keys(library_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigurationError, match="MMRAG_HTTP__API_KEYS"):
        check_exposure(library_settings(http={"host": "0.0.0.0"}))
    check_exposure(library_settings(http={"host": "0.0.0.0", "api_keys": KEY}))
    check_exposure(library_settings(http={"host": "127.0.0.1"}))
    with pytest.raises(ValidationError, match="at least 16"):
        library_settings(http={"api_keys": "short"})


def test_server_refuses_to_start_exposed_without_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MMRAG_DATA_DIR": str(tmp_path),
        "MMRAG_HTTP__HOST": "0.0.0.0",
        "MMRAG_CLIP__PRETRAINED": "none",
    }
    env.pop("MMRAG_HTTP__API_KEYS", None)
    run = subprocess.run(
        [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in run.stderr
    assert "Traceback" not in run.stderr


# -- query images: memory stays bounded -------------------------------------------------------


def test_huge_query_images_are_refused_before_decoding(
    served: tuple[TestClient[Any], dict[str, str]],
) -> None:
    client, _ = served
    buf = io.BytesIO()
    Image.new("L", (9400, 9400)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000  # small file, 88 MP
    response = client.post("/v1/search", files={"image": ("big.png", buf.getvalue(), "image/png")})
    assert response.status_code == 413
    assert "9400x9400" in response.json()["detail"]
    assert "http.max_image_pixels" in response.json()["detail"]


# -- the ingestion CLI on hostile folders -------------------------------------------------------


def _without_root_privileges() -> list[str]:
    """Root reads chmod-000 folders anyway; drop that power so permissions apply as to a user."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_cli_on_unreadable_folders_and_its_own_data_dir(lib: Path) -> None:
    data = lib / "data"  # the data directory lives inside the library it ingests
    env = {**os.environ, "MMRAG_DATA_DIR": str(data), "MMRAG_CLIP__PRETRAINED": "none"}
    cmd = [sys.executable, "-m", "ingestion", "ingest", "--quiet"]

    def ingest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_without_root_privileges(), *cmd, *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    for _ in range(2):
        run = ingest(str(lib))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "2 assets, 2 points" in run.stdout
        assert "unsupported" not in run.stdout
    (lib / "sub").chmod(0)
    try:
        synced = ingest(str(lib), "--sync")
        inner = ingest(str(lib / "sub" / "plants.md"))
    finally:
        (lib / "sub").chmod(0o755)
    for run in (synced, inner):
        assert run.returncode == 1, run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr
        assert "Permission denied" in run.stdout
        assert "2 assets, 2 points" in run.stdout  # nothing removed for want of a look
    assert f"failed: {lib / 'sub'}: folder unreadable" in synced.stdout
    assert "kept" in synced.stdout


def test_cli_with_only_missing_paths_loads_nothing_and_creates_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "MMRAG_DATA_DIR": str(tmp_path / "data")}  # pretrained CLIP: offline
    run = subprocess.run(
        [sys.executable, "-m", "ingestion", "ingest", str(tmp_path / "nope")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"path not found: {tmp_path / 'nope'}" in run.stdout
    assert "models:" not in run.stdout  # printed once models are loaded
    assert not (tmp_path / "data").exists()


# -- starting the server: fail fast, and ready means able to serve -----------------------------


def test_ready_is_503_while_another_process_holds_the_collection(
    served: tuple[TestClient[Any], dict[str, str]],
    settings: Settings,
    clip: Any,
    text_model: Any,
) -> None:
    first, _ = served
    assert first.get("/ready").json() == {"status": "ready"}
    second = create_app(settings, models=Models(clip=clip, text=text_model))
    with TestClient(app=second) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert "open in another process" in response.json()["detail"]
        assert client.get("/health").status_code == 200


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "MMRAG_CLIP__PRETRAINED": "none", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_server_checks_port_and_lock_before_loading_models(
    served: tuple[TestClient[Any], dict[str, str]], settings: Settings
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _serve({"MMRAG_DATA_DIR": str(settings.data_dir), "MMRAG_HTTP__PORT": str(port)})
    assert taken.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "loading models" not in taken.stderr
    assert "Traceback" not in taken.stderr

    client, _ = served
    assert client.get("/ready").status_code == 200  # this process holds the collection
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    locked = _serve({"MMRAG_DATA_DIR": str(settings.data_dir), "MMRAG_HTTP__PORT": str(port)})
    assert locked.returncode == 2
    assert "open in another process" in locked.stderr
    assert "loading models" not in locked.stderr
    assert "Traceback" not in locked.stderr


def test_server_without_weights_says_what_to_set_in_one_message(tmp_path: Path) -> None:
    run = _serve({"MMRAG_DATA_DIR": str(tmp_path), "MMRAG_CLIP__PRETRAINED": "laion2b_s34b_b79k"})
    assert run.returncode == 2
    assert "MMRAG_CLIP__CHECKPOINT" in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 4
