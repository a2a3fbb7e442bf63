"""The real Litestar app through its test client, on the real engine and models."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from PIL import Image

from app.adapters.edge_store import EdgeVectorStore
from app.core.errors import ConfigurationError
from app.http.app import Models, create_app
from app.settings import Settings
from app.wiring import collection_spec
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings

Client = TestClient[Any]
CAT_QUESTION = "How much dry food does Chelsea the cat eat?"


def ingest_into(settings: Settings, models: Models, library: Path) -> None:
    store = EdgeVectorStore(settings.collections_dir)
    try:
        collection = store.open(
            collection_spec(settings, settings.collection, models.clip, models.text), create=True
        )
        report = IngestionPipeline(
            collection, models.clip, models.text, read_options_for(settings, settings.collection)
        ).run(IngestRequest(paths=(library,)))
        assert report.ok
    finally:
        store.close()


@pytest.fixture(scope="module")
def library_data(
    models: Models, sample_library: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    data_dir = tmp_path_factory.mktemp("http-data")
    ingest_into(make_settings(data_dir), models, sample_library)
    return data_dir


@pytest.fixture(scope="module")
def client(library_data: Path, models: Models) -> Iterator[Client]:
    with TestClient(app=create_app(make_settings(library_data), models=models)) as c:
        yield c


@pytest.fixture
def client_with(
    library_data: Path, models: Models, client: Client
) -> Iterator[Callable[..., Client]]:
    """A second app on the same data, with other settings (the module's app steps aside)."""
    opened: list[Client] = []

    def _make(transport: httpx.AsyncBaseTransport | None = None, **overrides: Any) -> Client:
        app = create_app(
            make_settings(library_data, **overrides), models=models, llm_transport=transport
        )
        c = TestClient(app=app)
        c.__enter__()
        opened.append(c)
        return c

    client.__exit__(None, None, None)  # releases the engine's directory lock
    try:
        yield _make
    finally:
        for c in opened:
            c.__exit__(None, None, None)
        client.__enter__()


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


# -- happy paths -------------------------------------------------------------------------------


def test_health_ready_and_openapi(client: Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/ask", "/v1/assets/{asset_id}", "/v1/collections/{name}"} <= set(
        paths
    )


def test_text_search_returns_hits_with_scores_and_urls(client: Client) -> None:
    body = client.post("/v1/search", json={"query": "a ginger cat", "top_k": 3}).json()
    assert body["query_kind"] == "text"
    assert body["signals"] == ["text", "bm25"]  # random CLIP weights: no CLIP text signal
    top = body["hits"][0]
    assert top["source"].endswith("photos/animals/chelsea.jpg")
    assert top["relevant"] is True
    assert 0.3 < top["scores"]["text"] <= 1.0
    assert "clip" not in top["scores"]
    assert top["thumbnail_url"] == f"/v1/assets/{top['asset_id']}/thumbnail?collection=default"
    assert top.get("dashboard_url") is None  # embedded: no dashboard
    assert len({h["asset_id"] for h in body["hits"]}) == len(body["hits"]) == 3


def test_image_upload_returns_the_same_image_first(client: Client, sample_library: Path) -> None:
    photo = sample_library / "photos" / "places" / "flower.jpg"
    response = client.post(
        "/v1/search",
        files={"image": ("flower.jpg", photo.read_bytes(), "image/jpeg")},
        data={"top_k": "2"},
    )
    body = response.json()
    assert body["query_kind"] == "image"
    assert body["signals"] == ["clip"]
    assert body["hits"][0]["source"].endswith("flower.jpg")
    assert body["hits"][0]["scores"]["clip"] == pytest.approx(1.0, abs=1e-3)
    assert len(body["hits"]) == 2


def test_ask_extractive_cites_the_note(client: Client) -> None:
    body = client.post("/v1/ask", json={"question": CAT_QUESTION}).json()
    assert body["status"] == "extractive"
    assert (body["provider"], body["model"]) == ("extractive", "quotes")
    assert body["prompt_version"] == "v2"
    cited = {c["number"]: c for c in body["citations"]}
    assert cited[1]["source"].endswith("notes/cat-care.txt")
    assert cited[1]["kind"] == "text_chunk"
    assert "30 grams of dry food" in body["answer"]
    assert "[1]" in body["answer"]
    assert all(f"[{n}]" in body["answer"] for n in cited)


def test_ask_with_nothing_relevant_says_so(client: Client) -> None:
    body = client.post("/v1/ask", json={"question": "When is my quarterly tax filing due?"}).json()
    assert body["status"] == "nothing_found"
    assert body["citations"] == []
    assert "found nothing" in body["answer"]


def test_asset_metadata_content_and_thumbnail(client: Client, sample_library: Path) -> None:
    hit = client.post(
        "/v1/search", json={"query": "Hubble deep field galaxies", "top_k": 1}
    ).json()["hits"][0]
    asset = client.get(f"/v1/assets/{hit['asset_id']}").json()
    assert asset["file_name"] == "hubble_deep_field.jpg"
    assert (asset["width"], asset["height"]) == (1000, 872)
    assert asset["tags"] == ["space", "astronomy"]
    content = client.get(asset["content_url"])
    assert content.status_code == 200
    assert content.content == (sample_library / "photos/space/hubble_deep_field.jpg").read_bytes()
    thumb = client.get(asset["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256


def test_collection_reports_counts_models_and_quantization(client: Client) -> None:
    body = client.get("/v1/collections/default").json()
    assert body["assets"] == 17
    assert body["points"] == 17
    assert body["models"]["clip"] == {
        "name": "open_clip/ViT-B-32",
        "dim": 512,
        "weights": "none (seed 0)",
        "aligned": False,
    }
    assert body["models"]["text"]["dim"] == 384
    q = body["quantization"]
    assert (q["kind"], q["encoding"], q["query_encoding"], q["rescore"]) == (
        "binary",
        "2bit",
        "4bit",
        True,
    )


# -- the OpenAI-compatible provider, against a mock transport ----------------------------------


def completion(content: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        },
    )


OPENAI = {
    "llm": {
        "provider": "openai",
        "base_url": "http://llm.test/v1",
        "model": "gpt-4o-mini",
        "api_key": "sk-test",
        "backoff_s": 0,
        "max_retries": 2,
    }
}


def test_openai_provider_grounds_and_drops_unknown_citations(
    client_with: Callable[..., Client],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return completion("She eats 30 grams of dry food in the evening [1]. She likes fish [7].")

    c = client_with(httpx.MockTransport(handler), **OPENAI)
    body = c.post("/v1/ask", json={"question": CAT_QUESTION}).json()
    assert body["status"] == "answered"
    assert (body["provider"], body["model"]) == ("openai", "gpt-4o-mini")
    assert body["answer"] == "She eats 30 grams of dry food in the evening [1]. She likes fish."
    assert [c["number"] for c in body["citations"]] == [1]
    assert body["citations"][0]["source"].endswith("cat-care.txt")

    (request,) = seen
    assert request.url == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    sent = json.loads(request.content)
    system, user = sent["messages"]
    assert system["role"] == "system"
    assert "Cite every statement" in system["content"]
    assert (
        '<source id="1" label="text: cat-care.txt" trust="untrusted library data">'
        in (user["content"])
    )
    assert CAT_QUESTION in user["content"]


def test_openai_provider_retries_429_then_succeeds(client_with: Callable[..., Client]) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {}})
        return completion("Thirty grams [1].")

    body = (
        client_with(httpx.MockTransport(handler), **OPENAI)
        .post("/v1/ask", json={"question": CAT_QUESTION})
        .json()
    )
    assert len(calls) == 2
    assert body["answer"] == "Thirty grams [1]."


def test_openai_provider_timeout_is_a_504_problem(client_with: Callable[..., Client]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    response = client_with(httpx.MockTransport(handler), **OPENAI).post(
        "/v1/ask", json={"question": CAT_QUESTION}
    )
    assert problem_of(response, 504)["type"] == "/problems/llm-timeout"


def test_openai_provider_failures_become_problems(client_with: Callable[..., Client]) -> None:
    statuses = iter([500, 503, 502, 401])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), json={"error": {"message": "upstream says no"}})

    c = client_with(httpx.MockTransport(handler), **OPENAI)
    body = problem_of(c.post("/v1/ask", json={"question": CAT_QUESTION}), 503)  # 3 tries, all 5xx
    assert "502" in body["detail"]
    body = problem_of(c.post("/v1/ask", json={"question": CAT_QUESTION}), 503)
    assert "401" in body["detail"]
    assert "MMRAG_LLM__API_KEY" in body["detail"]
    assert "sk-test" not in body["detail"]


def test_nothing_found_never_calls_the_model(client_with: Callable[..., Client]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the model must not be called")

    body = (
        client_with(httpx.MockTransport(handler), **OPENAI)
        .post("/v1/ask", json={"question": "When is my quarterly tax filing due?"})
        .json()
    )
    assert body["status"] == "nothing_found"
    assert (body["provider"], body["model"]) == ("none", "none")  # no model wrote it


# -- bad input: precise 4xx problems -----------------------------------------------------------


def test_unknown_collection_is_404(client: Client) -> None:
    problem_of(client.get("/v1/collections/nope"), 404)
    body = problem_of(client.post("/v1/search", json={"query": "x", "collection": "nope"}), 404)
    assert body["type"] == "/problems/collection-not-found"
    problem_of(client.post("/v1/ask", json={"question": "x", "collection": "nope"}), 404)


@pytest.mark.parametrize("path", ["/v1/search", "/v1/ask"])
def test_invalid_json_is_400(client: Client, path: str) -> None:
    response = client.post(
        path, content=b'{"query": ', headers={"content-type": "application/json"}
    )
    problem_of(response, 400)


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/search", {"query": ""}),
        ("/v1/search", {"query": "x", "top_k": 0}),
        ("/v1/search", {"query": "x", "top_k": 101}),
        ("/v1/search", {"query": "x", "filters": {"modalities": ["sculpture"]}}),
        ("/v1/search", {"query": "x", "surprise": True}),
        ("/v1/search", {"query": "x", "collection": "../etc"}),
        ("/v1/ask", {"question": ""}),
        ("/v1/ask", {"question": "x" * 2001}),
        ("/v1/ask", {"question": "x", "top_k": "five"}),
    ],
)
def test_invalid_fields_are_422(client: Client, path: str, payload: dict[str, Any]) -> None:
    problem_of(client.post(path, json=payload), 422)


def test_top_k_over_the_configured_maximum_is_422(client: Client) -> None:
    body = problem_of(client.post("/v1/search", json={"query": "x", "top_k": 60}), 422)
    assert body["field"] == "top_k"
    assert "retrieval.max_top_k" in body["detail"]


def test_oversize_upload_is_413(client_with: Callable[..., Client], sample_library: Path) -> None:
    c = client_with(http={"max_upload_bytes": 2048})
    buffer = io.BytesIO()
    Image.open(sample_library / "photos" / "food" / "coffee.jpg").save(buffer, "JPEG", quality=50)
    photo = buffer.getvalue()
    assert 2048 < len(photo) < 64 * 1024
    body = problem_of(c.post("/v1/search", files={"image": ("c.jpg", photo, "image/jpeg")}), 413)
    assert "the limit is 2048" in body["detail"]
    # Bodies far over the limit are refused before they are read.
    huge = b"x" * (2048 + 200 * 1024)
    body = problem_of(c.post("/v1/search", files={"image": ("c.jpg", huge, "image/jpeg")}), 413)
    assert "limited to 2048 bytes" in body["detail"]


def test_unsupported_uploads_are_415(client: Client) -> None:
    body = problem_of(
        client.post("/v1/search", files={"image": ("a.txt", b"not an image", "text/plain")}), 415
    )
    assert "JPEG, PNG" in body["detail"]
    problem_of(
        client.post("/v1/search", content=b"query", headers={"content-type": "text/plain"}), 415
    )


def test_multipart_without_an_image_is_422(client: Client) -> None:
    problem_of(client.post("/v1/search", files={"other": ("a.jpg", b"x", "image/jpeg")}), 422)


@pytest.mark.parametrize(
    "fields",
    [{"top_k": "0"}, {"top_k": "many"}, {"modalities": "sculpture"}, {"collection": "a/b"}],
)
def test_multipart_fields_have_the_json_limits(
    client: Client, sample_library: Path, fields: dict[str, str]
) -> None:
    photo = (sample_library / "photos" / "space" / "moon.png").read_bytes()
    response = client.post(
        "/v1/search", files={"image": ("m.png", photo, "image/png")}, data=fields
    )
    problem_of(response, 422)


def test_multipart_filters_apply(client: Client, sample_library: Path) -> None:
    photo = (sample_library / "photos" / "space" / "moon.png").read_bytes()
    body = client.post(
        "/v1/search",
        files={"image": ("m.png", photo, "image/png")},
        data={"tags": ["people", "astronomy"], "top_k": "10"},  # a list is a repeated field
    ).json()
    names = [Path(h["source"]).name for h in body["hits"]]
    assert names[0] == "moon.png"
    assert set(names) == {
        "moon.png",
        "hubble_deep_field.jpg",
        "astronaut.png",
        "grace_hopper.jpg",
        "cameraman.png",
    }


def test_asset_ids_are_checked(client: Client) -> None:
    problem_of(client.get("/v1/assets/not-an-id"), 422)
    body = problem_of(client.get("/v1/assets/" + "0" * 32), 404)
    assert body["type"] == "/problems/asset-not-found"
    problem_of(client.get(f"/v1/assets/{'0' * 32}/content"), 404)
    problem_of(client.get(f"/v1/assets/{'0' * 32}/thumbnail"), 404)


def test_text_assets_have_no_thumbnail(client: Client) -> None:
    hit = client.post("/v1/search", json={"query": "espresso machine", "top_k": 1}).json()["hits"][
        0
    ]
    assert hit["modality"] == "text"
    assert hit["thumbnail_url"] is None
    problem_of(client.get(f"/v1/assets/{hit['asset_id']}/thumbnail"), 404)


def test_content_of_a_moved_file_is_404(
    models: Models, sample_library: Path, tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    shutil.copy2(sample_library / "photos/animals/chelsea.jpg", library / "chelsea.jpg")
    settings = make_settings(tmp_path / "data")
    ingest_into(settings, models, library)
    with TestClient(app=create_app(settings, models=models)) as c:
        hit = c.post(
            "/v1/search",
            files={"image": ("q.jpg", (library / "chelsea.jpg").read_bytes(), "image/jpeg")},
        ).json()["hits"][0]
        assert c.get(hit["content_url"]).status_code == 200
        (library / "chelsea.jpg").unlink()
        body = problem_of(c.get(hit["content_url"]), 404)
        assert "no longer exists" in body["detail"]


def test_a_broken_prompt_refuses_to_start(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(Path(__file__).resolve().parent.parent / "prompts", prompts)
    (prompts / "v2" / "answer.md").write_text("Question: {{question}}\n")  # no {{context}}
    with pytest.raises(ConfigurationError, match=r"missing placeholder\(s\) \['context'\]"):
        create_app(make_settings(tmp_path / "data", prompts_dir=prompts))


def test_openai_provider_still_rate_limited_is_429_with_retry_after(
    client_with: Callable[..., Client],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"retry-after": "0"}, json={"error": {"message": "slow"}}
        )

    response = client_with(httpx.MockTransport(handler), **OPENAI).post(
        "/v1/ask", json={"question": CAT_QUESTION}
    )
    assert problem_of(response, 429)["type"] == "/problems/llm-rate-limited"
    assert response.headers["retry-after"] == "1"  # upstream said 0: at least a second


def test_unusable_model_output_is_a_502_never_an_answer(
    client_with: Callable[..., Client],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": None}}]})

    response = client_with(httpx.MockTransport(handler), **OPENAI).post(
        "/v1/ask", json={"question": CAT_QUESTION}
    )
    body = problem_of(response, 502)
    assert "no text content" in body["detail"]
    assert "citations" not in body


def test_openai_provider_with_vision_sends_the_pictures_behind_image_sources(
    client_with: Callable[..., Client],
) -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return completion("She eats 30 grams [1].")

    settings = {"llm": {**OPENAI["llm"], "vision": True}}
    client_with(httpx.MockTransport(handler), **settings).post(
        "/v1/ask", json={"question": CAT_QUESTION}
    )
    (body,) = sent
    parts = body["messages"][1]["content"]
    assert isinstance(parts, list)
    assert parts[0]["type"] == "text"
    assert "How much dry food" in parts[0]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert images, "the chelsea.jpg source should travel as a picture"
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/") for p in images)


def test_content_honours_range_requests(client: Client, sample_library: Path) -> None:
    hits = client.post("/v1/search", json={"query": "espresso", "top_k": 3}).json()["hits"]
    note = next(h for h in hits if h["source"].endswith("coffee-brewing.md"))
    data = (sample_library / "notes" / "coffee-brewing.md").read_bytes()
    url = note["content_url"]
    whole = client.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=10-29"})
    assert part.status_code == 206
    assert part.content == data[10:30]
    assert part.headers["content-range"] == f"bytes 10-29/{len(data)}"
    assert part.headers["content-length"] == "20"
    tail = client.get(url, headers={"Range": "bytes=-7"})
    assert (tail.status_code, tail.content) == (206, data[-7:])
    open_ended = client.get(url, headers={"Range": f"bytes={len(data) - 3}-"})
    assert open_ended.content == data[-3:]
    beyond = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert problem_of(beyond, 416)["type"] == "/problems/range-not-satisfiable"
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    several = client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, data)
