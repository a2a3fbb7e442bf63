"""``OpenAICompatibleLLM``: any OpenAI-compatible ``/chat/completions`` endpoint over httpx.

Retries 429 and 5xx answers (and failed connections) with exponential backoff, honouring
``Retry-After``; a read timeout is not retried (the caller has waited long enough) and becomes
``LLMTimeoutError``. Streams with server-sent events (``"stream": true``); a stream closed by
the caller closes the connection, which stops the generation upstream. With ``vision`` on,
image parts travel as ``image_url`` data URLs; with ``json_schema`` on, a schema becomes
``response_format: json_schema``. The transport is injectable so tests use
``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.core.errors import LLMError, LLMOutputError, LLMRateLimitedError, LLMTimeoutError
from app.core.ports import ChatMessage, GenerationRequest

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 30.0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), _MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


class OpenAICompatibleLLM:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        json_schema: bool = False,
        vision: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )
        self._model = model
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._json_schema = json_schema
        self._vision = vision

    @property
    def provider(self) -> str:
        return "openai"

    @property
    def model(self) -> str:
        return self._model

    @property
    def supports_json_schema(self) -> bool:
        return self._json_schema

    @property
    def supports_images(self) -> bool:
        return self._vision

    def _body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [self._message(m) for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if stream:
            body["stream"] = True
        if request.json_schema is not None and self._json_schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(request.json_schema)},
            }
        return body

    def _message(self, message: ChatMessage) -> dict[str, Any]:
        if not (self._vision and message.images):
            return {"role": message.role, "content": message.content}
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        for image in message.images:
            url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return {"role": message.role, "content": parts}

    async def complete(self, request: GenerationRequest) -> str:
        response = await self._send(self._body(request, stream=False), stream=False)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return self._parse(response)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        response = await self._send(self._body(request, stream=True), stream=True)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                await response.aread()  # a server that ignores "stream": one whole completion
                yield self._parse(response)
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    return
                piece = self._delta(data)
                if piece:
                    yield piece
        except httpx.TimeoutException as exc:
            msg = f"the language model stopped answering within the timeout ({exc!r})"
            raise LLMTimeoutError(msg) from exc
        except httpx.TransportError as exc:
            raise LLMError(f"the language model's stream broke off: {exc!r}") from exc
        finally:
            await response.aclose()

    @staticmethod
    def _delta(data: str) -> str | None:
        try:
            chunk = json.loads(data)
            content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            msg = f"the language model's stream is not OpenAI chat chunks: {data[:200]!r}"
            raise LLMOutputError(msg) from exc
        return content if isinstance(content, str) else None

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                request = self._client.build_request("POST", "chat/completions", json=body)
                response = await self._client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                msg = f"the language model did not answer within the timeout ({exc!r})"
                raise LLMTimeoutError(msg) from exc
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    msg = f"cannot reach the language model at {self._client.base_url}: {exc!r}"
                    raise LLMError(msg) from exc
                await self._sleep(attempt, None)
                attempt += 1
                continue
            if not response.is_error:
                return response
            await response.aread()
            await response.aclose()
            if response.status_code in _RETRY_STATUS and attempt < self._max_retries:
                await self._sleep(attempt, _retry_after(response))
                attempt += 1
                continue
            if response.status_code == 429:
                msg = f"the language model is rate limited (429 after {attempt} retries)"
                raise LLMRateLimitedError(msg, retry_after_s=_retry_after(response))
            raise LLMError(self._error_message(response))

    async def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self._backoff_s * (2**attempt)
        await asyncio.sleep(delay * (1.0 + 0.1 * random.random()))

    @staticmethod
    def _error_message(response: httpx.Response) -> str:
        hint = " (check MMRAG_LLM__API_KEY)" if response.status_code in {401, 403} else ""
        try:
            detail = response.json().get("error", {}).get("message", "")
        except (ValueError, AttributeError):
            detail = response.text[:200]
        return f"the language model answered {response.status_code}{hint}: {detail}".rstrip(": ")

    def _parse(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            msg = "the language model's answer is not an OpenAI chat completion"
            raise LLMOutputError(msg) from exc
        if not isinstance(content, str):
            raise LLMOutputError("the language model's answer has no text content")
        return content

    async def aclose(self) -> None:
        await self._client.aclose()
