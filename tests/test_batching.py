"""Concurrent query encodings share model batches, and each caller gets its own rows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.adapters.batching import BatchingTextEmbedder, Coalescer
from app.adapters.text_embedder import SentenceTextEmbedder


def rows(items: list[str]) -> np.ndarray:
    """What the model below gives: one row per item, from the item alone."""
    return np.array([[float(len(s)), float(sum(map(ord, s)))] for s in items], dtype=np.float32)


class SlowModel:
    """A model edge: each call takes 30 ms, whatever its size; row i encodes item i."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self._fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, items: list[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(list(items))
        time.sleep(0.03)
        if self._fail_on in items:
            raise ValueError(f"cannot encode {self._fail_on!r}")
        return rows(items)


def _concurrently(coalescer: Coalescer[str], requests: list[list[str]]) -> list[object]:
    start = threading.Barrier(len(requests))

    def one(items: list[str]) -> object:
        start.wait()
        try:
            return coalescer.encode(items)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_concurrent_calls_share_batches_and_get_their_own_rows() -> None:
    model = SlowModel()
    coalescer: Coalescer[str] = Coalescer(model, max_batch=64)
    requests = [[f"question {i}"] for i in range(12)] + [["a", "bb", "ccc"]]
    results = _concurrently(coalescer, requests)
    for items, result in zip(requests, results, strict=True):
        assert isinstance(result, np.ndarray)
        np.testing.assert_array_equal(result, rows(items))  # the rows of its own items
    assert len(model.batches) <= 4  # 13 requests, a few model calls
    assert coalescer.calls == len(model.batches)


def test_batches_stay_within_the_limit_and_a_lone_call_is_not_held_back() -> None:
    model = SlowModel()
    coalescer: Coalescer[str] = Coalescer(model, max_batch=4)
    _concurrently(coalescer, [[f"q{i}"] for i in range(10)])
    assert all(len(batch) <= 4 for batch in model.batches)
    started = time.perf_counter()
    coalescer.encode(["alone"])
    assert time.perf_counter() - started < 1.0  # no timer to wait for (30 ms of "model")


def test_a_failing_batch_fails_its_callers_and_the_next_call_works() -> None:
    model = SlowModel(fail_on="poison")
    coalescer: Coalescer[str] = Coalescer(model, max_batch=64)
    results = _concurrently(coalescer, [["poison"], ["fine"], ["also fine"]])
    assert any(isinstance(r, ValueError) for r in results)
    for r in results:  # a caller batched with the poison gets its error, the others rows
        assert isinstance(r, (ValueError, np.ndarray))
    np.testing.assert_array_equal(coalescer.encode(["after"]), rows(["after"]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_real_text_model_gives_the_same_vectors_batched(
    text_model: SentenceTextEmbedder,
) -> None:
    batching = BatchingTextEmbedder(text_model)
    questions = [f"how often does ferry number {i} leave the harbour?" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(lambda q: batching.embed_texts([q])[0], questions))
    alone = [text_model.embed_texts([q])[0] for q in questions]
    for a, b in zip(batched, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert batching.embed_texts([]).shape == (0, text_model.info.dim)
