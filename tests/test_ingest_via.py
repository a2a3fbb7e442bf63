"""``python -m ingestion ingest --via URL``: the CLI hands its run to a running service (a real
uvicorn server on a free loopback port, the real app, engine and models) and shows the same
progress, summary and exit codes as a local run. And a local run that finds the collection held
by a service says so and points at ``--via``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.http.app import Models, create_app
from ingestion.cli import EXIT_CANNOT_RUN, EXIT_OK, EXIT_SOME_FAILED, main
from tests.conftest import CAT_FILES, copy_sample
from tests.test_ingest_api import KEY, ingest_settings

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def serve(tmp_path: Path, models: Models) -> Iterator[Callable[..., str]]:
    """Serves the app with uvicorn on a free 127.0.0.1 port; returns its URL."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def _serve(**overrides: Any) -> str:
        app = create_app(ingest_settings(tmp_path / "data", **overrides), models=models)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield _serve
    for server, thread in running:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """The CLI in this process: its exit code and what it printed."""

    def _run(*args: str) -> tuple[int, str]:
        code = main(["ingest", *args])
        return code, capsys.readouterr().out

    return _run


@pytest.fixture
def library(sample_library: Path, tmp_path: Path) -> Path:
    return copy_sample(
        sample_library,
        tmp_path / "media",
        (*CAT_FILES, "photos/food/coffee.jpg", "notes/coffee-brewing.md"),
    )


def test_via_hands_the_paths_to_the_service(
    serve: Callable[..., str], run: Run, library: Path
) -> None:
    url = serve(http={"ingest_roots": str(library)})
    code, out = run("--via", url, str(library / "photos"), "--tag", "via")
    assert code == EXIT_OK, out
    assert "Ingestion summary" in out
    assert "ingested" in out
    assert "2/2" in out  # the progress bar, as a local run draws it
    assert "collection 'default': 2 assets, 2 points" in out
    assert f"indexed ({url})" in out
    hit = httpx.post(f"{url}/v1/search", json={"query": "a ginger tabby cat", "top_k": 1}).json()
    assert hit["hits"][0]["source"] == "photos/animals/chelsea.jpg"
    assert hit["hits"][0]["tags"] == ["via"]

    code, out = run("--via", url, str(library / "photos"))  # again: nothing new
    assert code == EXIT_OK
    assert "unchanged" in out
    assert "ingested" not in out


def test_via_upload_sends_the_files_in_as_many_jobs_as_the_limits_need(
    serve: Callable[..., str], run: Run, library: Path
) -> None:
    (library / "notes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (library / "notes" / "slides.key").write_bytes(b"PK")
    url = serve(http={"max_ingest_files": 2})
    code, out = run("--via", url, "--upload", str(library))
    assert code == EXIT_SOME_FAILED, out
    # 5 files and a sidecar caption, 2 a job: the caption travels with its photo.
    assert "job 4 of 4" in out
    assert f"failed: {library.resolve() / 'notes' / 'broken.png'}" in out  # named as here
    assert "skipped (unsupported type)" in out
    jobs = httpx.get(f"{url}/v1/jobs").json()["jobs"]
    assert len(jobs) == 4
    assert sum(job["counts"].get("ingested", 0) for job in jobs) == 4
    hit = httpx.post(f"{url}/v1/search", json={"query": "a ginger tabby cat", "top_k": 1}).json()
    assert hit["hits"][0]["source"].endswith("/media/photos/animals/chelsea.jpg")


def test_via_says_why_the_service_refused_and_exits_2(
    serve: Callable[..., str], run: Run, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = serve(http={"api_keys": KEY})
    code, out = run("--via", url, "--upload", str(library))
    assert code == EXIT_CANNOT_RUN
    assert "refused the API key" in out
    assert "MMRAG_API_KEY" in out
    monkeypatch.setenv("MMRAG_API_KEY", KEY)
    code, out = run("--via", url, str(library))  # paths, but this service takes none
    assert code == EXIT_CANNOT_RUN
    assert "(403)" in out
    assert "MMRAG_HTTP__INGEST_ROOTS" in out
    code, out = run("--via", url, "--upload", str(library / "notes"))
    assert code == EXIT_OK, out


def test_via_usage_errors_exit_2(run: Run, library: Path) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there
    cases = {
        ("--upload", str(library)): "go with --via",
        ("--via", f"http://127.0.0.1:{port}", "--dry-run", str(library)): "--dry-run work on",
        ("--via", f"http://127.0.0.1:{port}", "--upload", "--sync", str(library)): "--sync",
        ("--via", f"http://127.0.0.1:{port}", str(library)): "cannot reach the service",
    }
    for args, words in cases.items():
        code, out = run(*args)
        assert code == EXIT_CANNOT_RUN, args
        assert words in out, out


def test_a_collection_held_by_a_service_points_at_via(
    ingest: Callable[..., Any],
    small_library: Path,
    settings: Any,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``ingest`` fixture's store keeps the collection open, as a running service does."""
    ingest(small_library / "notes")
    monkeypatch.setenv("MMRAG_HTTP__HOST", "0.0.0.0")
    monkeypatch.setenv("MMRAG_HTTP__PORT", "8123")
    code, out = run(str(small_library), "--data-dir", str(settings.data_dir))
    assert code == EXIT_CANNOT_RUN
    assert "is open in another process" in out
    assert "--via http://127.0.0.1:8123" in out
