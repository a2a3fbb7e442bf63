"""Running the service for a team: request ids, logs, rate limits, CORS and metrics, on the real
app (real engine, real models) through Litestar's test client."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.http.app import Models, create_app
from app.http.jobs import JobSource
from app.http.metrics import CountedJobRunner, Metrics
from app.http.ops import JsonFormatter, RequestIdFilter
from app.http.schemas import JobKind, JobOut, JobStatus, job_links
from app.settings import DEFAULT_RATE_LIMIT_PER_MINUTE, HttpSettings
from ingestion.pipeline import IngestReport
from tests.conftest import make_settings
from tests.test_http import CAT_QUESTION, OPENAI, completion, ingest_into, problem_of
from tests.test_ingest_api import upload, wait_for

Client = TestClient[Any]
KEY = "a" * 24
OTHER_KEY = "b" * 24
HEX_ID = r"[0-9a-f]{32}"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def library(models: Models, sample_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the sample library (17 assets), ingested once for the module."""
    data_dir = tmp_path_factory.mktemp("ops-data")
    ingest_into(make_settings(data_dir), models, sample_library)
    return data_dir


@pytest.fixture
def serve(models: Models, tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """Starts the real app (on ``data_dir``, default an empty one) with settings overrides; one
    at a time, as the engine's lock wants, all stopped at the end."""
    running: list[Client] = []

    def _serve(
        data_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> Client:
        for old in running:
            old.__exit__(None, None, None)
        running.clear()
        settings = make_settings(data_dir or tmp_path / "data", **overrides)
        client = TestClient(app=create_app(settings, models=models, llm_transport=transport))
        client.__enter__()
        running.append(client)
        return client

    yield _serve
    for client in running:
        client.__exit__(None, None, None)


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of the exposition (a histogram's ``_count``, a counter's ``_total``)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# -- request ids -------------------------------------------------------------------------------


def test_a_request_id_round_trips_and_is_quoted_in_problems(serve: Callable[..., Client]) -> None:
    client = serve()
    sent = {"X-Request-ID": "trace-42.a:b_c"}
    missing = client.get("/v1/collections/nope", headers=sent)
    body = problem_of(missing, 404)
    assert missing.headers["x-request-id"] == "trace-42.a:b_c"
    assert body["request_id"] == "trace-42.a:b_c"

    # No route at all: answered before any middleware runs, still with an id, and the same one
    # in the header and the body.
    unrouted = client.get("/no/such/route")
    body = problem_of(unrouted, 404)
    assert unrouted.headers["x-request-id"] == body["request_id"]
    assert re.fullmatch(HEX_ID, body["request_id"])

    # Successes carry one too, a new one each time.
    ids = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("bad", ["two words", "x" * 129, 'quote"d', "tab\there", "é"])
def test_an_insane_request_id_is_replaced(serve: Callable[..., Client], bad: str) -> None:
    client = serve()
    response = client.get("/v1/collections/nope", headers={"X-Request-ID": bad.encode()})
    body = problem_of(response, 404)
    assert body["request_id"] == response.headers["x-request-id"] != bad
    assert re.fullmatch(HEX_ID, body["request_id"])


def test_log_lines_are_json_with_the_request_id(
    capsys: pytest.CaptureFixture[str], serve: Callable[..., Client]
) -> None:
    # capsys comes first so that it outlives the app, which logs as it stops too.
    client = serve(log_format="json")
    client.get("/v1/collections/nope", headers={"X-Request-ID": "quote-me-1"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    (access,) = [x for x in lines if x["logger"] == "app.http.access"]
    assert access["request_id"] == "quote-me-1"
    assert access["message"].startswith("GET /v1/collections/nope 404 ")
    assert (access["method"], access["route"], access["status"]) == (
        "GET",
        "/v1/collections/{name}",
        404,
    )
    assert access["level"] == "INFO"
    assert access["duration_ms"] > 0
    assert access["time"].endswith("+00:00")


def test_log_lines_are_readable_by_default(
    capsys: pytest.CaptureFixture[str], serve: Callable[..., Client]
) -> None:
    client = serve()
    client.get("/v1/collections/nope", headers={"X-Request-ID": "quote-me-2"})
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "app.http.access" in x]
    assert " INFO app.http.access [quote-me-2]: GET /v1/collections/nope 404 " in line
    assert not line.startswith("{")


def test_the_json_formatter_keeps_extras_and_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "n=%d", (3,), sys.exc_info())
    record.collection = "default"
    assert RequestIdFilter().filter(record)  # outside a request: no id
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "n=3"
    assert entry["collection"] == "default"
    assert "request_id" not in entry
    assert entry["exception"].endswith("ValueError: boom")


# -- rate limits -------------------------------------------------------------------------------


def test_the_rate_limit_is_off_on_loopback_and_on_beyond_it() -> None:
    assert HttpSettings().requests_per_minute == 0
    exposed = HttpSettings(host="0.0.0.0", api_keys=(KEY,))
    assert exposed.requests_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE
    assert HttpSettings(host="0.0.0.0", rate_limit_per_minute=0).requests_per_minute == 0
    assert HttpSettings(rate_limit_per_minute=5).requests_per_minute == 5
    with pytest.raises(ValidationError, match="not a path"):
        HttpSettings(rate_limit_exempt="health")


def test_over_the_limit_is_a_429_problem_with_retry_after_per_key(
    serve: Callable[..., Client],
) -> None:
    client = serve(http={"api_keys": f"{KEY},{OTHER_KEY}", "rate_limit_per_minute": 3})
    first = {"Authorization": f"Bearer {KEY}"}
    for _ in range(3):
        assert client.get("/v1/collections/nope", headers=first).status_code == 404
    refused = client.get("/v1/collections/nope", headers={**first, "X-Request-ID": "rl-1"})
    body = problem_of(refused, 429)
    assert body["type"] == "/problems/rate-limited"
    assert "at most 3 a minute per API key" in body["detail"]
    assert body["request_id"] == "rl-1"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"

    # The other key has a budget of its own, whichever header carries it.
    second = client.get("/v1/collections/nope", headers={"X-API-Key": OTHER_KEY})
    assert second.status_code == 404
    assert second.headers["ratelimit-remaining"] == "2"

    # Probes and the page's files are never limited, even for a spent key.
    for _ in range(5):
        assert client.get("/health", headers=first).status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/", headers=first).status_code == 200
        assert client.get("/static/app.js").status_code == 200

    # Refused ahead of the handler, still measured with its status.
    text = client.get("/metrics", headers=first).text
    route = "/v1/collections/{name}"
    assert metric(text, "mmrag_http_request_duration_seconds_count", route=route, status="429") == 1
    assert metric(text, "mmrag_http_request_duration_seconds_count", route=route, status="404") == 4


def test_without_a_valid_key_the_client_address_is_limited(
    serve: Callable[..., Client],
) -> None:
    client = serve(http={"api_keys": KEY, "rate_limit_per_minute": 2})
    wrong = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert client.get("/v1/collections/nope", headers=wrong).status_code == 401
    assert client.get("/v1/collections/nope").status_code == 401
    problem_of(client.get("/v1/collections/nope", headers=wrong), 429)  # guessing is limited
    # A valid key is counted on its own, not with its address.
    ok = client.get("/v1/collections/nope", headers={"X-API-Key": KEY})
    assert ok.status_code == 404


def test_no_rate_limit_headers_when_off(serve: Callable[..., Client]) -> None:
    client = serve()
    for _ in range(5):
        response = client.get("/v1/collections/nope")
        assert response.status_code == 404
        assert "ratelimit-limit" not in response.headers


# -- CORS --------------------------------------------------------------------------------------


def test_no_cors_headers_by_default(serve: Callable[..., Client]) -> None:
    client = serve()
    simple = client.get("/health", headers={"Origin": ORIGIN})
    preflight = client.options(
        "/v1/search", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    for response in (simple, preflight):
        assert not [h for h in response.headers if h.startswith("access-control-")]


def test_allowed_origins_get_cors_and_a_preflight(serve: Callable[..., Client]) -> None:
    client = serve(http={"cors_origins": f"{ORIGIN}, https://*.example.org", "api_keys": KEY})
    simple = client.get("/health", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Request-ID" in simple.headers["access-control-expose-headers"]
    wildcard = client.get("/health", headers={"Origin": "https://team.example.org"})
    assert wildcard.headers["access-control-allow-origin"] == "https://team.example.org"

    # A browser asks first, without the key; the answer lets it send the key and a JSON body.
    preflight = client.options(
        "/v1/search",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "x-api-key"} <= set(allowed.split(", "))
    assert "access-control-allow-credentials" not in preflight.headers


def test_other_origins_get_no_cors(serve: Callable[..., Client]) -> None:
    client = serve(http={"cors_origins": ORIGIN})
    for origin in ("https://evil.example", f"{ORIGIN}.evil.example", "http://app.example.com"):
        simple = client.get("/health", headers={"Origin": origin})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers
        preflight = client.options(
            "/v1/search", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_origins_must_be_origins() -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        HttpSettings(cors_origins=f"{ORIGIN}/")
    with pytest.raises(ValidationError, match="is not an origin"):
        HttpSettings(cors_origins="app.example.com")
    assert HttpSettings(cors_origins=f"{ORIGIN},*").cors_origins == (ORIGIN, "*")


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_show_routes_stages_and_collection_sizes(
    serve: Callable[..., Client], library: Path
) -> None:
    client = serve(library)
    before = client.get("/metrics")
    assert before.headers["content-type"].startswith("text/plain")
    assert metric(before.text, "mmrag_stage_duration_seconds_count", stage="encode") == 0
    assert metric(before.text, "mmrag_collection_points", collection="default") == 17
    assert metric(before.text, "mmrag_collection_assets", collection="default") == 17
    assert metric(before.text, "process_resident_memory_bytes") is not None

    hits = client.post("/v1/search", json={"query": "a ginger cat", "top_k": 3})
    assert hits.status_code == 200
    client.get("/v1/collections/nope")
    text = client.get("/metrics").text
    search = {"method": "POST", "route": "/v1/search", "status": "200"}
    assert metric(text, "mmrag_http_request_duration_seconds_count", **search) == 1
    assert (metric(text, "mmrag_http_request_duration_seconds_sum", **search) or 0) > 0
    route = {"route": "/v1/collections/{name}", "status": "404"}
    assert metric(text, "mmrag_http_request_duration_seconds_count", **route) == 1
    assert metric(text, "mmrag_http_request_duration_seconds_count", route="/metrics") == 1
    assert metric(text, "mmrag_stage_duration_seconds_count", stage="encode") == 1
    assert metric(text, "mmrag_stage_duration_seconds_count", stage="search") == 1
    assert metric(text, "mmrag_stage_duration_seconds_count", stage="generation") == 0
    assert metric(text, "mmrag_http_requests_in_flight") == 1  # the scrape itself


def test_metrics_time_the_model_first_token_and_generation(
    serve: Callable[..., Client], library: Path
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return completion("She eats 30 grams of dry food [1].")

    client = serve(library, httpx.MockTransport(answer), **OPENAI)
    body = client.post("/v1/ask", json={"question": CAT_QUESTION}).json()
    assert body["status"] == "answered"
    text = client.get("/metrics").text
    for stage in ("encode", "search", "first_token", "generation"):
        assert metric(text, "mmrag_stage_duration_seconds_count", stage=stage) == 1, stage
    first = metric(text, "mmrag_stage_duration_seconds_sum", stage="first_token")
    whole = metric(text, "mmrag_stage_duration_seconds_sum", stage="generation")
    assert first is not None and whole is not None and 0 < first <= whole


def test_metrics_need_a_key_unless_made_public(serve: Callable[..., Client]) -> None:
    client = serve(http={"api_keys": KEY})
    problem_of(client.get("/metrics"), 401)
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    public = serve(http={"api_keys": KEY, "metrics_public": True})
    assert public.get("/metrics").status_code == 200
    problem_of(public.get("/v1/collections/default"), 401)  # only the metrics


def test_an_ingest_job_moves_the_ingestion_counters(
    serve: Callable[..., Client], sample_library: Path
) -> None:
    client = serve(ingestion={"ocr": "off", "speech": "off"})
    text = client.get("/metrics").text
    assert metric(text, "mmrag_ingest_jobs_total", status="succeeded") == 0
    assert metric(text, "mmrag_ingest_files_total", outcome="ingested") == 0
    assert metric(text, "mmrag_collection_assets", collection="default") is None  # none yet

    note = (sample_library / "notes" / "cat-care.txt").read_bytes()
    job = upload(client, [("cat-care.txt", note)], collection="notes").json()
    done = wait_for(client, job["id"])
    assert (done["status"], done["counts"]) == ("succeeded", {"ingested": 1})
    text = client.get("/metrics").text
    assert metric(text, "mmrag_ingest_jobs_total", status="succeeded") == 1
    assert metric(text, "mmrag_ingest_jobs_total", status="failed") == 0
    assert metric(text, "mmrag_ingest_files_total", outcome="ingested") == 1
    assert metric(text, "mmrag_ingest_files_total", outcome="failed") == 0
    # The collection the job wrote to is measured from then on.
    assert metric(text, "mmrag_collection_assets", collection="notes") == 1
    points = metric(text, "mmrag_collection_points", collection="notes")
    assert points == done["results"][0]["segments"] > 0
    assert metric(text, "mmrag_collection_assets", collection="default") is None


def test_a_job_that_cannot_run_counts_as_failed() -> None:
    metrics = Metrics()
    job = JobOut(
        id="0" * 32,
        kind=JobKind.UPLOAD,
        status=JobStatus.RUNNING,
        collection="default",
        tags=[],
        sync=False,
        created_at="2026-01-01T00:00:00.000+00:00",
        links=job_links("0" * 32, "default"),
    )

    def broken(*_: Any) -> IngestReport:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        CountedJobRunner(broken, metrics)(
            job,
            JobSource(paths=[], roots=[], given=[]),
            None,
            threading.Event(),  # type: ignore[arg-type]
        )
    text = metrics.render().decode()
    assert metric(text, "mmrag_ingest_jobs_total", status="failed") == 1
    assert metric(text, "mmrag_ingest_jobs_total", status="succeeded") == 0
