"""``LlamaCppLLM``: a GGUF model run in-process by llama.cpp (llama-cpp-python).

The default model is the Qwen2.5 0.5B Instruct GGUF assembled from PyPI parts
(``app.adapters.packaged_models``); any other GGUF works through ``MMRAG_LLM__MODEL_PATH``.
A JSON schema becomes a grammar, so the output always parses. Generation runs in a worker
thread and is checked for cancellation after every token: a client that goes away, or the
timeout, stops it instead of leaving it running. One generation at a time per model (the
llama.cpp context is not shared between threads); others wait their turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

from app.core.errors import LLMError, LLMTimeoutError, ModelUnavailableError
from app.core.ports import GenerationRequest

_END = object()


class LlamaCppLLM:
    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        timeout_s: float = 60.0,
        seed: int = 0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - a declared dependency
            msg = "llama-cpp-python is not installed; run `make venv` (it builds llama.cpp)"
            raise ModelUnavailableError(msg) from exc
        if not model_path.is_file():
            msg = f"no GGUF model at {model_path} (MMRAG_LLM__MODEL_PATH)"
            raise ModelUnavailableError(msg)
        try:
            self._llama = Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=threads,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailableError(f"cannot load the GGUF model {model_path}: {exc}") from exc
        self._model = model_path.stem
        self._timeout_s = timeout_s
        self._turn = threading.Lock()

    @property
    def provider(self) -> str:
        return "local"

    @property
    def model(self) -> str:
        return self._model

    @property
    def supports_json_schema(self) -> bool:
        return True

    @property
    def supports_images(self) -> bool:
        return False

    async def complete(self, request: GenerationRequest) -> str:
        return "".join([piece async for piece in self.stream(request)])

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is gone: nobody is listening any more
                stop.set()

        def generate() -> None:
            with self._turn:
                try:
                    if stop.is_set():
                        return
                    chunks = cast(
                        "Iterator[dict[str, Any]]", self._llama.create_chat_completion(**kwargs)
                    )
                    for chunk in chunks:
                        if stop.is_set():
                            break
                        piece = chunk["choices"][0]["delta"].get("content")
                        if piece:
                            put(piece)
                except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, re-raised there
                    put(exc)
                finally:
                    put(_END)

        worker = threading.Thread(target=generate, name="llama-generate", daemon=True)
        worker.start()
        deadline = loop.time() + self._timeout_s
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), max(deadline - loop.time(), 0))
                except TimeoutError as exc:
                    msg = f"the local model did not finish within {self._timeout_s:g} s"
                    raise LLMTimeoutError(msg) from exc
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise LLMError(f"the local model failed: {item}") from item
                yield str(item)
        finally:
            stop.set()  # cancelled, timed out or done: the worker stops at its next token

    async def aclose(self) -> None:
        await asyncio.to_thread(self._turn.acquire)  # let a generation in flight stop first
        try:
            self._llama.close()
        finally:
            self._turn.release()
