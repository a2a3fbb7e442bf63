"""Query encodings of concurrent requests, run as one model batch.

Under load, every request used to encode its query alone: twenty questions at once meant twenty
model calls of one text each, queued behind each other on the same cores, although one call on
twenty texts costs little more than one on a single text. These wrappers coalesce concurrent
calls: the first caller runs the model on everything waiting; callers arriving meanwhile wait,
and the next of them runs the model on all that queued up behind the first call. Nobody waits
for a timer, so a lone request is not slowed down, and the batch grows with the load by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from app.core.models import EmbeddingModelInfo
from app.core.ports import FloatMatrix, ImageTextEmbedder, TextEmbedder

if TYPE_CHECKING:
    from PIL.Image import Image

T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("error", "items", "result")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.result: FloatMatrix | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class Coalescer(Generic[T]):
    """``encode(items)`` for many threads at once, as few calls of ``fn`` as the load allows
    (each on at most ``max_batch`` items, whole requests only)."""

    def __init__(self, fn: Callable[[list[T]], FloatMatrix], *, max_batch: int) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._waiting: list[_Request[T]] = []
        self._running = False
        self._cond = threading.Condition()
        self.calls = 0  # model calls made (benchmarks and tests read it)

    def encode(self, items: Sequence[T]) -> FloatMatrix:
        request = _Request(list(items))
        with self._cond:
            self._waiting.append(request)
        while True:
            with self._cond:
                while not request.done and self._running:
                    self._cond.wait()
                if request.done:
                    return self._outcome(request)
                # Nobody is running the model: this thread runs it for everything waiting
                # (in arrival order, its own request among the first ``max_batch`` items or in
                # a later round), then hands over, so no caller serves others for long.
                self._running = True
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[_Request[T]]:
        batch: list[_Request[T]] = []
        size = 0
        while self._waiting:
            n = len(self._waiting[0].items)
            if batch and size + n > self._max_batch:
                break
            batch.append(self._waiting.pop(0))
            size += n
        return batch

    def _run(self, batch: list[_Request[T]]) -> None:
        matrix: FloatMatrix | None = None
        error: BaseException = RuntimeError("the model call was abandoned")
        try:
            matrix = self._fn([item for r in batch for item in r.items])
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, as a lone caller gets it
            error = exc
        finally:
            with self._cond:
                self.calls += 1
                start = 0
                for request in batch:
                    if matrix is None:
                        request.error = error
                    else:
                        request.result = matrix[start : start + len(request.items)]
                        start += len(request.items)
                self._running = False
                self._cond.notify_all()

    @staticmethod
    def _outcome(request: _Request[T]) -> FloatMatrix:
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result


def _empty(dim: int) -> FloatMatrix:
    return np.zeros((0, dim), dtype=np.float32)


class BatchingTextEmbedder:
    """A ``TextEmbedder`` whose concurrent calls share model batches."""

    def __init__(self, inner: TextEmbedder, *, max_batch: int = 64) -> None:
        self._inner = inner
        self._texts: Coalescer[str] = Coalescer(inner.embed_texts, max_batch=max_batch)

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._inner.info

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        return self._texts.encode(texts) if texts else _empty(self.info.dim)


class BatchingImageTextEmbedder:
    """An ``ImageTextEmbedder`` whose concurrent calls share model batches (texts with texts,
    images with images)."""

    def __init__(self, inner: ImageTextEmbedder, *, max_batch: int = 64) -> None:
        self._inner = inner
        self._texts: Coalescer[str] = Coalescer(inner.embed_texts, max_batch=max_batch)
        self._images: Coalescer[Image] = Coalescer(inner.embed_images, max_batch=max_batch)

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._inner.info

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        return self._texts.encode(texts) if texts else _empty(self.info.dim)

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        return self._images.encode(images) if images else _empty(self.info.dim)
