"""Ingestion through the running service: uploads and server paths become background jobs that
run with the service's own models and open store, while it keeps answering. The real app on the
real engine and models, through Litestar's test client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from PIL import Image

from app.core.ports import FloatMatrix
from app.http.app import Models, create_app
from app.http.jobs import JobRecord, JobSource
from app.http.schemas import JobKind, JobOut, JobStatus, job_links
from app.http.uploads import safe_name
from app.settings import Settings
from tests.conftest import CAT_FILES, copy_sample, make_settings
from tests.test_http import problem_of

Client = TestClient[Any]
KEY = "k" * 24
FINISHED = {"succeeded", "failed", "interrupted"}


def ingest_settings(data_dir: Path, **overrides: Any) -> Settings:
    """The test settings, OCR and speech off (no test here is about them; they cost time)."""
    return make_settings(data_dir, ingestion={"ocr": "off", "speech": "off"}, **overrides)


def wait_for(
    client: Client | httpx.Client,
    job_id: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 180,
) -> dict[str, Any]:
    """The job once it has finished (or failed, or was interrupted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in FINISHED:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def upload(client: Client, files: Sequence[tuple[str, bytes]], **fields: str) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/v1/ingest", files=parts, data=fields)


class Apps:
    """Starts the real app on one data directory, one at a time (the engine's lock)."""

    def __init__(self, data_dir: Path, models: Models) -> None:
        self.data_dir = data_dir
        self._models = models
        self._running: Client | None = None

    def __call__(self, *, models_: Models | None = None, **overrides: Any) -> Client:
        self.stop()
        app = create_app(
            ingest_settings(self.data_dir, **overrides), models=models_ or self._models
        )
        self._running = TestClient(app=app)
        self._running.__enter__()
        return self._running

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.__exit__(None, None, None)


@pytest.fixture
def app_with(tmp_path: Path, models: Models) -> Iterator[Apps]:
    apps = Apps(tmp_path / "data", models)
    yield apps
    apps.stop()


# -- uploads ------------------------------------------------------------------------------------


def test_an_uploaded_picture_is_ingested_by_a_job_and_found(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    client = app_with()
    photo = (sample_library / CAT_FILES[0]).read_bytes()
    caption = (sample_library / CAT_FILES[1]).read_bytes()
    response = upload(
        client,
        [("animals/chelsea.jpg", photo), ("animals/chelsea.jpg.txt", caption)],
        tags="cats, pets",
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "upload"
    assert job["status"] in {"queued", "running"}
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "collection": "/v1/collections/default",
    }
    assert job["tags"] == ["cats", "pets"]

    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["counts"] == {"ingested": 1}  # the caption is a sidecar, not a document
    assert (done["files_total"], done["files_done"]) == (1, 1)
    (result,) = done["results"]
    assert result["path"] == f"{job['id']}/animals/chelsea.jpg"  # a library path, not the server's
    assert result["outcome"] == "ingested"
    assert done["started_at"] <= done["finished_at"]
    stored = tmp_path / "data" / "uploads" / job["id"] / "animals" / "chelsea.jpg"
    assert stored.read_bytes() == photo

    found = client.post(
        "/v1/search", files={"image": ("q.jpg", photo, "image/jpeg")}, data={"top_k": "1"}
    ).json()["hits"][0]
    assert found["asset_id"] == result["asset_id"]
    assert found["source"] == result["path"]
    assert found["tags"] == ["cats", "pets"]
    by_words = client.post("/v1/search", json={"query": "a ginger tabby cat", "top_k": 1}).json()
    assert by_words["hits"][0]["asset_id"] == result["asset_id"]  # the uploaded sidecar caption
    assert client.get(found["content_url"]).content == photo

    on_disk = json.loads((tmp_path / "data" / "jobs" / f"{job['id']}.json").read_text())
    assert on_disk["job"]["status"] == "succeeded"
    assert client.get("/v1/jobs").json()["jobs"][0]["id"] == job["id"]


def test_uploaded_file_names_cannot_leave_the_job_folder(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    assert safe_name("../../etc/passwd") == "etc/passwd"
    assert safe_name("C:\\photos\\.cat.jpg") == "C_/photos/cat.jpg"
    assert safe_name("/abs/./a\x00b.jpg") == "abs/a_b.jpg"
    assert safe_name("..") == "upload"
    assert len(safe_name("x" * 300 + ".jpeg").encode()) == 200
    assert safe_name("x" * 300 + ".jpeg").endswith(".jpeg")

    client = app_with()
    note = (sample_library / "notes" / "cat-care.txt").read_bytes()
    response = upload(client, [("../../../escape.txt", note), ("escape.txt", note)])
    job = wait_for(client, response.json()["id"])
    folder = tmp_path / "data" / "uploads" / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["escape-2.txt", "escape.txt"]
    assert not (tmp_path / "escape.txt").exists()
    assert job["counts"] == {"ingested": 2}
    clash = upload(client, [("a.txt", note), ("a.txt/b.txt", note)])
    assert "clashes" in problem_of(clash, 422)["detail"]


def test_upload_limits_are_413_and_leave_nothing_behind(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    client = app_with(http={"max_ingest_files": 2, "max_ingest_bytes": 64 * 1024})
    note = (sample_library / "notes" / "cat-care.txt").read_bytes()
    body = problem_of(upload(client, [(f"n{i}.txt", note) for i in range(3)]), 413)
    assert "at most 2 per job (http.max_ingest_files)" in body["detail"]
    # Over the limit, within the body the route reads: refused as the bytes arrive.
    body = problem_of(upload(client, [("a.txt", note), ("big.txt", b"y" * 70_000)]), 413)
    assert f"more than {64 * 1024} bytes" in body["detail"]
    assert "http.max_ingest_bytes" in body["detail"]
    # A body far over the route's own limit is refused before it is read.
    huge = b"x" * (64 * 1024 + 200 * 1024)
    body = problem_of(upload(client, [("huge.bin", huge)]), 413)
    assert f"limited to {64 * 1024} bytes" in body["detail"]
    assert client.get("/v1/jobs").json() == {"jobs": []}
    uploads = tmp_path / "data" / "uploads"
    assert [p.name for p in uploads.iterdir()] == [".incoming"]
    assert list((uploads / ".incoming").iterdir()) == []


def test_the_ingest_route_has_a_larger_body_limit_than_queries(
    app_with: Apps, sample_library: Path
) -> None:
    client = app_with(http={"max_upload_bytes": 4096})
    photo = (sample_library / "photos" / "food" / "coffee.jpg").read_bytes()
    assert len(photo) > 4096
    problem_of(client.post("/v1/search", files={"image": ("c.jpg", photo, "image/jpeg")}), 413)
    response = upload(client, [("coffee.jpg", photo)])
    assert response.status_code == 202
    assert wait_for(client, response.json()["id"])["counts"] == {"ingested": 1}


@pytest.mark.parametrize(
    ("fields", "files", "field"),
    [
        ({}, [], "files"),
        ({"collection": "a/b"}, [("a.txt", b"words")], "collection"),
        ({"tags": "x" * 200}, [("a.txt", b"words")], "tags"),
        ({"other": "1"}, [("a.txt", b"words")], "other"),
    ],
)
def test_upload_forms_are_checked(
    app_with: Apps,
    fields: dict[str, str],
    files: list[tuple[str, bytes]],
    field: str,
) -> None:
    client = app_with()
    if files:
        response = upload(client, files, **fields)
    else:  # a form with no file part at all
        response = client.post("/v1/ingest", files={"tags": (None, "a")})
    assert problem_of(response, 422)["field"] == field


def test_unsupported_uploads_create_no_collection(app_with: Apps, tmp_path: Path) -> None:
    client = app_with()
    job = wait_for(client, upload(client, [("slides.key", b"PK")], collection="new").json()["id"])
    assert job["status"] == "succeeded"
    assert job["unsupported"] == [f"{job['id']}/slides.key"]
    assert job["results"] == []
    assert not (tmp_path / "data" / "collections" / "new").exists()


# -- paths on the server ------------------------------------------------------------------------


def test_paths_under_an_allowed_root_are_ingested_and_others_refused(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    media = copy_sample(sample_library, tmp_path / "media", CAT_FILES)
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.txt").write_text("the password is swordfish")
    (media / "photos" / "link").symlink_to(outside, target_is_directory=True)
    (media / "notes" / "secret.txt").symlink_to(outside / "secret.txt")
    client = app_with(http={"ingest_roots": str(media)})

    response = client.post(
        "/v1/ingest", json={"paths": [str(media / "photos"), str(media / "notes")], "tags": ["t"]}
    )
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"])
    assert job["kind"] == "paths"
    assert job["counts"] == {"ingested": 2, "failed": 2}  # the two links out, reported
    outcomes = {r["path"]: (r["outcome"], r["reason"]) for r in job["results"]}
    assert outcomes["photos/animals/chelsea.jpg"][0] == "ingested"
    assert outcomes["notes/cat-care.txt"][0] == "ingested"
    assert "outside the library" in (outcomes["notes/secret.txt"][1] or "")
    assert "outside the library" in (outcomes["photos/link"][1] or "")
    assert str(tmp_path) not in json.dumps(job)  # library paths only

    refusals = {
        "/etc": (403, "outside the folders"),
        str(media / ".." / "private" / "secret.txt"): (403, "outside the folders"),
        str(media / "photos" / "link"): (403, "symbolic link"),
        str(media / "notes" / "secret.txt"): (403, "symbolic link"),
        str(media / "nothing-here"): (404, "does not exist"),
    }
    for given, (status, words) in refusals.items():
        body = problem_of(client.post("/v1/ingest", json={"paths": [given]}), status)
        assert f"paths[0] {given!r}" in body["detail"]
        assert words in body["detail"]
    body = problem_of(client.post("/v1/ingest", json={"paths": ["photos"]}), 422)
    assert body["field"] == "paths[0]"
    assert len(client.get("/v1/jobs").json()["jobs"]) == 1


def test_without_roots_paths_are_refused_naming_the_setting(
    app_with: Apps, sample_library: Path
) -> None:
    client = app_with()
    assert client.get("/v1/ingest/limits").json() == {
        "max_files": 200,
        "max_bytes": 2 * 1024**3,
        "paths": False,
    }
    body = problem_of(client.post("/v1/ingest", json={"paths": [str(sample_library)]}), 403)
    assert "MMRAG_HTTP__INGEST_ROOTS" in body["detail"]
    assert body["type"] == "/problems/forbidden"  # the project's problem type, like the others


# -- deleting ------------------------------------------------------------------------------------


def test_delete_removes_an_asset_from_search_and_its_uploaded_file(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    media = copy_sample(sample_library, tmp_path / "media", ("photos/food/coffee.jpg",))
    client = app_with(http={"ingest_roots": str(media)})
    photo = (sample_library / CAT_FILES[0]).read_bytes()
    uploaded = wait_for(client, upload(client, [("chelsea.jpg", photo)]).json()["id"])
    in_library = wait_for(
        client, client.post("/v1/ingest", json={"paths": [str(media)]}).json()["id"]
    )
    cat = uploaded["results"][0]["asset_id"]
    coffee = in_library["results"][0]["asset_id"]
    thumbnail = tmp_path / "data" / "thumbnails" / "default" / f"{cat}.jpg"
    assert thumbnail.is_file()

    assert client.delete(f"/v1/assets/{cat}").status_code == 204
    problem_of(client.get(f"/v1/assets/{cat}"), 404)
    hits = client.post(
        "/v1/search", files={"image": ("q.jpg", photo, "image/jpeg")}, data={"top_k": "5"}
    ).json()["hits"]
    assert [h["asset_id"] for h in hits] == [coffee]
    assert not thumbnail.exists()
    assert not (tmp_path / "data" / "uploads" / uploaded["id"]).exists()  # file and its folder
    problem_of(client.delete(f"/v1/assets/{cat}"), 404)

    assert client.delete(f"/v1/assets/{coffee}").status_code == 204
    assert (media / "photos" / "food" / "coffee.jpg").is_file()  # a library file stays
    problem_of(client.delete(f"/v1/assets/{coffee}?collection=nope"), 404)


# -- API keys on the write routes ----------------------------------------------------------------


def test_write_routes_need_a_valid_key(app_with: Apps, sample_library: Path) -> None:
    client = app_with(http={"api_keys": KEY})
    note = (sample_library / "notes" / "cat-care.txt").read_bytes()
    part = {"files": ("cat-care.txt", note, "text/plain")}
    asset = "0" * 32
    refused = client.post("/v1/ingest", files=part)
    assert "API key is required" in problem_of(refused, 401)["detail"]
    for headers in ({}, {"Authorization": f"Bearer {KEY}x"}, {"X-API-Key": "wrong"}):
        assert client.post("/v1/ingest", files=part, headers=headers).status_code == 401
        assert client.post("/v1/ingest", json={"paths": ["/x"]}, headers=headers).status_code == 401
        assert client.delete(f"/v1/assets/{asset}", headers=headers).status_code == 401
        assert client.get("/v1/jobs", headers=headers).status_code == 401
    good = {"Authorization": f"Bearer {KEY}"}
    response = client.post("/v1/ingest", files=part, headers=good)
    assert response.status_code == 202
    job = wait_for(client, response.json()["id"], headers=good)
    assert job["counts"] == {"ingested": 1}
    asset = job["results"][0]["asset_id"]
    assert client.delete(f"/v1/assets/{asset}", headers={"X-API-Key": KEY}).status_code == 204


# -- the service keeps answering, and jobs outlive it ---------------------------------------------


class GatedClip:
    """The real CLIP, whose image tower waits for a gate: a job stays 'running' as long as a
    test needs it to."""

    def __init__(self, clip: Any) -> None:
        self._clip = clip
        self.gate = threading.Event()
        self.waiting = threading.Event()

    @property
    def info(self) -> Any:
        return self._clip.info

    def embed_images(self, images: Sequence[Image.Image]) -> FloatMatrix:
        if images:
            self.waiting.set()
            assert self.gate.wait(120)
        result: FloatMatrix = self._clip.embed_images(images)
        return result

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        result: FloatMatrix = self._clip.embed_texts(texts)
        return result


def test_searches_are_answered_while_a_job_runs(
    app_with: Apps, models: Models, sample_library: Path
) -> None:
    gated = GatedClip(models.clip)
    client = app_with(models_=Models(clip=gated, text=models.text))
    first = upload(client, [("cat-care.txt", (sample_library / CAT_FILES[2]).read_bytes())])
    assert wait_for(client, first.json()["id"])["counts"] == {"ingested": 1}  # no picture
    photo = (sample_library / CAT_FILES[0]).read_bytes()
    job = upload(client, [("chelsea.jpg", photo)]).json()
    try:
        assert gated.waiting.wait(60)  # the job is embedding the picture, and waits
        running = client.get(f"/v1/jobs/{job['id']}").json()
        assert running["status"] == "running"
        assert (running["files_total"], running["files_done"]) == (1, 0)
        hits = client.post("/v1/search", json={"query": "dry food for the cat"}).json()["hits"]
        assert hits[0]["source"].endswith("cat-care.txt")
        assert client.get("/ready").json() == {"status": "ready"}
    finally:
        gated.gate.set()
    assert wait_for(client, job["id"])["counts"] == {"ingested": 1}


def test_a_stopped_service_interrupts_its_job_and_resumes_it_at_start(
    app_with: Apps, models: Models, sample_library: Path
) -> None:
    gated = GatedClip(models.clip)
    client = app_with(models_=Models(clip=gated, text=models.text))
    photos = [(p.name, p.read_bytes()) for p in sorted((sample_library / "photos").rglob("*.jpg"))]
    job = upload(client, photos[:6]).json()
    assert gated.waiting.wait(60)  # the first batch (4 photos) waits to be embedded

    def open_the_gate_once_stopping() -> None:
        while client.app.state.get("ingest") is not None:  # the lifespan is shutting down
            time.sleep(0.01)
        time.sleep(0.2)
        gated.gate.set()

    opener = threading.Thread(target=open_the_gate_once_stopping)
    opener.start()
    app_with.stop()  # the lifespan stops the worker: the job stops after its batch
    opener.join()
    record = json.loads((app_with.data_dir / "jobs" / f"{job['id']}.json").read_text())
    assert record["job"]["status"] == "interrupted"
    assert 0 < record["job"]["files_done"] < 6

    resumed = app_with()
    done = wait_for(resumed, job["id"])
    assert done["status"] == "succeeded", done
    assert done["resumed"] == 1
    assert done["counts"].get("ingested", 0) + done["counts"].get("unchanged", 0) == 6
    assert resumed.get("/v1/collections/default").json()["assets"] == 6  # no duplicates


def test_a_job_left_running_by_a_killed_service_is_resumed_at_start(
    app_with: Apps, sample_library: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    job_id = "a" * 32
    folder = data / "uploads" / job_id
    copy_sample(sample_library, folder, (CAT_FILES[2],))
    (data / "uploads" / ".incoming" / ("b" * 32)).mkdir(parents=True)  # an upload cut short
    source = JobSource(paths=[str(folder.resolve())], roots=[str(folder.resolve())], given=[])
    left = JobOut(
        id=job_id,
        kind=JobKind.UPLOAD,
        status=JobStatus.RUNNING,
        collection="default",
        tags=[],
        sync=False,
        created_at="2026-01-01T00:00:00.000+00:00",
        started_at="2026-01-01T00:00:01.000+00:00",
        files_total=1,
        links=job_links(job_id, "default"),
    )
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / f"{job_id}.json").write_bytes(
        msgspec.json.encode(JobRecord(job=left, source=source))
    )
    client = app_with()
    done = wait_for(client, job_id)
    assert done["status"] == "succeeded"
    assert done["resumed"] == 1
    assert done["counts"] == {"ingested": 1}
    hits = client.post("/v1/search", json={"query": "dry food for the cat"}).json()["hits"]
    assert hits[0]["source"] == f"{job_id}/notes/cat-care.txt"
    assert not (data / "uploads" / ".incoming" / ("b" * 32)).exists()


def test_unknown_jobs_are_404_and_the_document_lists_the_routes(
    app_with: Apps,
) -> None:
    client = app_with()
    body = problem_of(client.get(f"/v1/jobs/{'0' * 32}"), 404)
    assert "does not exist" in body["detail"]
    problem_of(client.get("/v1/jobs/nope"), 422)
    problem_of(client.get("/v1/jobs?limit=0"), 422)
    document = client.get("/schema/openapi.json").json()
    ingest = document["paths"]["/v1/ingest"]["post"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"202", "403", "404", "413", "415", "422"} <= set(ingest["responses"])
    upload_schema = document["components"]["schemas"]["IngestUpload"]
    assert upload_schema["required"] == ["files"]
    assert "delete" in document["paths"]["/v1/assets/{asset_id}"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/ingest/limits"} <= set(document["paths"])
    allowed = client.options(f"/v1/assets/{'0' * 32}").headers["allow"]
    assert allowed == "DELETE, GET, OPTIONS"  # every method, despite litestar#4169


def test_a_json_body_on_the_upload_route_keeps_the_usual_limit(
    app_with: Apps,
) -> None:
    client = app_with(http={"max_upload_bytes": 2048})
    paths = ["/" + "x" * 100] * 40
    body = problem_of(client.post("/v1/ingest", json={"paths": paths}), 413)
    assert "over 2048 bytes" in body["detail"]
