"""What the server adapter sends over the wire: qdrant-client (REST) pointed at a small HTTP
server on 127.0.0.1 that records every request and answers like Qdrant would, minimally.

Local mode drops quantization, HNSW and search parameters silently, so these settings can
only be checked here, in the requests themselves.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.adapters.payload import to_payload
from app.adapters.qdrant_server import QdrantServerStore
from app.core.collections import spec_to_dict
from app.core.errors import ConfigurationError, StoreError
from app.core.ids import point_id_for
from app.core.models import Fusion, SearchTuning, Signal, VectorQuery
from tests.store_fixtures import CLIP_DIM, SPEC, TEXT_DIM, library, unit_vector

API_KEY = "wire-test-key-0123456789"
UPDATED = {"operation_id": 1, "status": "completed"}
pytestmark = pytest.mark.filterwarnings(
    # The recording server speaks plain HTTP; qdrant-client rightly warns about the key.
    "ignore:Api key is used with an insecure connection:UserWarning"
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    """Every request seen, and the statuses to answer before the normal answer."""

    requests: list[Request] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # answered first, one per request
    points: list[dict[str, Any]] = field(default_factory=list)  # what a query finds
    retry_after: str | None = None  # the Retry-After header of a 429 answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if self.failures:
                return self.failures.pop(0), None
        for verb, pattern, result in ROUTES:
            if verb == method and re.fullmatch(pattern, path):
                return 200, result(self, body)
        return 404, None


# What Qdrant answers (the ``result`` part), for the calls the adapter makes.
ROUTES: list[tuple[str, str, Callable[[Recorder, Any], Any]]] = [
    ("GET", "/aliases", lambda _, __: {"aliases": []}),
    ("GET", "/collections", lambda _, __: {"collections": []}),
    ("GET", "/collections/[^/]+/exists", lambda _, __: {"exists": False}),
    ("PUT", "/collections/[^/]+", lambda _, __: True),
    ("POST", "/collections/aliases", lambda _, __: True),
    ("PUT", "/collections/[^/]+/(index|points)", lambda _, __: UPDATED),
    ("POST", "/collections/[^/]+/points/query", lambda r, _: {"points": r.points}),
    (
        "POST",
        "/collections/[^/]+/points/query/batch",
        lambda r, body: [{"points": r.points} for _ in body["searches"]],
    ),
]


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = self.path.split("?", 1)[0]
            recorder.requests.append(
                Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status, result = recorder.answer(self.command, path, body)
            if status == 200:
                payload: dict[str, Any] = {"result": result, "status": "ok", "time": 0}
            else:
                payload = {"status": {"error": f"test server says {status}"}, "time": 0}
            data = json.dumps(payload).encode()
            self.send_response(status)
            if status == 429 and recorder.retry_after is not None:
                self.send_header("Retry-After", recorder.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the test reads the recorder, not the log."""

    return Handler


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def url(recorder: Recorder) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def store(url: str) -> Iterator[QdrantServerStore]:
    s = QdrantServerStore(url, api_key=API_KEY, write_retries=2, retry_backoff_s=0.01)
    yield s
    s.close()


def sent(recorder: Recorder, method: str, pattern: str) -> list[Any]:
    return [
        r.body for r in recorder.requests if r.method == method and re.fullmatch(pattern, r.path)
    ]


def test_a_new_collection_carries_its_index_settings(url: str, recorder: Recorder) -> None:
    store = QdrantServerStore(
        url,
        api_key=API_KEY,
        shard_number=3,
        replication_factor=2,
        write_consistency_factor=2,
        on_disk_payload=False,
    )
    try:
        collection = store.open(SPEC, create=True)
    finally:
        store.close()
    assert collection.spec == SPEC
    (body,) = sent(recorder, "PUT", "/collections/lib-v1")
    binary = {"encoding": "one_and_half_bits", "query_encoding": "scalar4bits", "always_ram": True}
    assert body["quantization_config"] == {"binary": binary}
    assert body["hnsw_config"] == {"m": 8, "ef_construct": 32}
    assert body["vectors"] == {
        "clip": {"size": CLIP_DIM, "distance": "Cosine", "on_disk": True},
        "text": {"size": TEXT_DIM, "distance": "Cosine", "on_disk": True},
    }
    assert body["sparse_vectors"] == {"bm25": {"modifier": "idf"}}
    assert (body["shard_number"], body["replication_factor"]) == (3, 2)
    assert (body["write_consistency_factor"], body["on_disk_payload"]) == (2, False)
    assert body["metadata"] == {"mmrag_spec": json.loads(json.dumps(spec_to_dict(SPEC)))}
    indexes = {b["field_name"]: b["field_schema"] for b in sent(recorder, "PUT", r".*/index")}
    prefix = {"type": "keyword", "prefix": True}
    assert indexes == {
        "asset_id": "keyword",
        "modality": "keyword",
        "kind": "keyword",
        "tags": "keyword",
        "source": prefix,
        "library_path": prefix,
        "segment_index": "integer",
        "start_s": "float",
        "end_s": "float",
    }
    assert {r.path for r in recorder.requests if r.path.endswith("/index")} == {
        "/collections/lib-v1/index"
    }
    (aliases,) = sent(recorder, "POST", "/collections/aliases")
    assert aliases == {
        "actions": [{"create_alias": {"collection_name": "lib-v1", "alias_name": "lib"}}]
    }


def test_cluster_settings_are_left_to_the_server_when_unset(
    store: QdrantServerStore, recorder: Recorder
) -> None:
    store.open(SPEC, create=True)
    (body,) = sent(recorder, "PUT", "/collections/lib-v1")
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(body)
    assert body["on_disk_payload"] is True


def test_searches_carry_the_query_tuning(store: QdrantServerStore, recorder: Recorder) -> None:
    collection = store.open(SPEC, create=True)
    clip, text = unit_vector(1, CLIP_DIM), unit_vector(2, TEXT_DIM)
    tuning = SearchTuning(oversampling=3.0, hnsw_ef=48, rescore=True)
    collection.search(VectorQuery({Signal.CLIP: clip}, limit=5, tuning=tuning))
    collection.search(VectorQuery({Signal.CLIP: clip, Signal.TEXT: text}, limit=5, tuning=tuning))
    collection.search(VectorQuery({Signal.CLIP: clip}, limit=5, tuning=tuning, exact=True))
    collection.search(
        VectorQuery({Signal.CLIP: clip, Signal.TEXT: text}, limit=5, fusion=Fusion.RRF, rrf_k=10)
    )
    collection.search(
        VectorQuery({Signal.TEXT: text}, limit=5, tuning=dataclasses.replace(tuning, rescore=False))
    )
    single, fused, exact, ranked, unrescored = sent(
        recorder, "POST", r"/collections/lib/points/query"
    )
    tuned = {"hnsw_ef": 48, "quantization": {"rescore": True, "oversampling": 3.0}}
    assert single["params"] == tuned
    assert single["using"] == "clip"
    assert single["query"]["nearest"] == pytest.approx(clip.tolist())
    assert fused["query"] == {"fusion": "dbsf"}
    assert [p["using"] for p in fused["prefetch"]] == ["clip", "text"]
    assert [p["params"] for p in fused["prefetch"]] == [tuned, tuned]
    assert [p["limit"] for p in fused["prefetch"]] == [64, 64]
    assert exact["params"] == {"exact": True, "quantization": {"ignore": True}}
    assert ranked["query"] == {"rrf": {"k": 10}}
    assert unrescored["params"]["quantization"] == {"rescore": False, "oversampling": 3.0}


def test_hits_are_scored_per_signal_in_one_round_trip(
    store: QdrantServerStore, recorder: Recorder
) -> None:
    """Each dense signal's score of the hits comes from the server, exact, over just those
    points, in one batch request; BM25 coverage from the sparse vector that came back."""
    collection = store.open(SPEC, create=True)
    item = library()[2]
    point_id = point_id_for(item.segment.asset.asset_id, item.segment.index)
    recorder.points = [
        {
            "id": point_id,
            "version": 1,
            "score": 0.9,
            "payload": json.loads(json.dumps(to_payload(item.segment))),
            "vector": {"bm25": {"indices": [1, 2], "values": [1.0, 1.0]}},
        }
    ]
    clip, text = item.vectors[Signal.CLIP], item.vectors[Signal.TEXT]
    (hit,) = collection.search(
        VectorQuery({Signal.CLIP: clip, Signal.TEXT: text}, limit=5, keywords="lighthouse")
    )
    assert hit.segment == item.segment
    assert hit.signal_scores[Signal.CLIP] == hit.signal_scores[Signal.TEXT] == 0.9
    (query,) = sent(recorder, "POST", r"/collections/lib/points/query")
    assert query["with_vector"] == ["bm25"]
    assert [p["using"] for p in query["prefetch"]] == ["clip", "text", "bm25"]
    (batch,) = sent(recorder, "POST", r"/collections/lib/points/query/batch")
    assert [s["using"] for s in batch["searches"]] == ["clip", "text"]
    for scoring in batch["searches"]:
        assert scoring["filter"] == {"must": [{"has_id": [point_id]}]}
        assert scoring["params"] == {"exact": True, "quantization": {"ignore": True}}
        assert scoring["limit"] == 1
        assert scoring["with_payload"] is False


def test_every_request_carries_the_api_key(store: QdrantServerStore, recorder: Recorder) -> None:
    store.hold("lib")
    collection = store.open(SPEC, create=True)
    collection.upsert(library()[:3])
    collection.search(VectorQuery({Signal.TEXT: unit_vector(2, TEXT_DIM)}, limit=5))
    store.names()
    assert len(recorder.requests) > 15
    assert {r.headers.get("api-key") for r in recorder.requests} == {API_KEY}


def test_writes_go_in_batches_through_the_alias(url: str, recorder: Recorder) -> None:
    store = QdrantServerStore(url, write_batch_points=4)
    try:
        store.open(SPEC, create=True).upsert(library())
    finally:
        store.close()
    batches = sent(recorder, "PUT", "/collections/lib/points")
    assert [len(b["points"]) for b in batches] == [4, 4, 4, 3]
    ids = [p["id"] for b in batches for p in b["points"]]
    assert ids == [point_id_for(i.segment.asset.asset_id, i.segment.index) for i in library()]
    assert all("api-key" not in r.headers for r in recorder.requests)


def test_transient_failures_are_retried(store: QdrantServerStore, recorder: Recorder) -> None:
    collection = store.open(SPEC, create=True)
    recorder.failures = [503, 429]
    query = VectorQuery({Signal.TEXT: unit_vector(2, TEXT_DIM)}, limit=5)
    assert collection.search(query) == []
    assert len(sent(recorder, "POST", r"/collections/lib/points/query")) == 3


def test_a_rate_limit_waits_as_long_as_the_server_asks(
    store: QdrantServerStore, recorder: Recorder
) -> None:
    collection = store.open(SPEC, create=True)
    recorder.failures, recorder.retry_after = [429], "1"
    started = time.monotonic()
    collection.upsert(library()[:1])
    assert time.monotonic() - started >= 1.0  # the backoff alone is 0.01 s
    assert len(sent(recorder, "PUT", "/collections/lib/points")) == 2


def test_persistent_failures_end_in_a_clear_error(
    store: QdrantServerStore, recorder: Recorder, url: str
) -> None:
    collection = store.open(SPEC, create=True)
    recorder.failures = [503] * 3
    with pytest.raises(StoreError) as failed:
        collection.upsert(library()[:1])
    message = str(failed.value)
    assert url in message
    assert "failed to write points after 3 attempts" in message
    assert "503" in message
    assert "test server says 503" in message
    recorder.failures = [400]  # a refusal is not retried
    with pytest.raises(StoreError, match="failed to search: HTTP 400"):
        collection.search(VectorQuery({Signal.TEXT: unit_vector(2, TEXT_DIM)}, limit=5))
    assert not recorder.failures


def test_an_unreachable_server_fails_fast_naming_the_setting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # nothing listens there now
    # A long backoff: were the first contact retried, this test would take minutes.
    store = QdrantServerStore(url, write_retries=5, retry_backoff_s=30.0)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="MMRAG_STORE__URL") as held:
            store.hold("lib")
        with pytest.raises(StoreError, match="MMRAG_STORE__URL"):
            store.open(SPEC, create=True)
    finally:
        store.close()
    assert time.monotonic() - started < 5
    assert f"cannot reach the Qdrant server at {url}" in str(held.value)
    assert "ConnectError" in str(held.value)


def test_a_refused_api_key_names_the_key_setting(url: str, recorder: Recorder) -> None:
    recorder.failures = [401]
    store = QdrantServerStore(url, api_key="wrong-key-0123456789")
    try:
        with pytest.raises(StoreError, match="MMRAG_STORE__API_KEY"):
            store.hold("lib")
    finally:
        store.close()


def test_certificate_checks_can_be_turned_off_over_rest_only(url: str) -> None:
    store = QdrantServerStore(url, verify_tls=False)
    try:
        store.hold("lib")  # qdrant-client takes the option (plain HTTP has no certificate)
    finally:
        store.close()
    with pytest.raises(ConfigurationError, match="MMRAG_STORE__PREFER_GRPC"):
        QdrantServerStore(url, prefer_grpc=True, verify_tls=False)
