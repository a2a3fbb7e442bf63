"""``OpenAICompatibleLLM``: any OpenAI-compatible ``/chat/completions`` endpoint over httpx.

Retries 429 and 5xx answers (and failed connections) with exponential backoff, honouring
``Retry-After``; a read timeout is not retried (the caller has waited long enough) and becomes
``LLMTimeoutError``. The transport is injectable so tests use ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from app.core.errors import LLMError, LLMRateLimitedError, LLMTimeoutError
from app.core.ports import Completion, CompletionRequest

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

    @property
    def name(self) -> str:
        return "openai"

    async def complete(self, request: CompletionRequest) -> Completion:
        body = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        response = await self._post_with_retries(body)
        return self._parse(response)

    async def _post_with_retries(self, body: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._client.post("chat/completions", json=body)
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
            if response.status_code in _RETRY_STATUS and attempt < self._max_retries:
                await self._sleep(attempt, _retry_after(response))
                attempt += 1
                continue
            if response.status_code == 429:
                msg = f"the language model is rate limited (429 after {attempt} retries)"
                raise LLMRateLimitedError(msg)
            if response.is_error:
                raise LLMError(self._error_message(response))
            return response

    async def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self._backoff_s * (2**attempt)
        await asyncio.sleep(delay * (1.0 + 0.1 * random.random()))

    @staticmethod
    def _error_message(response: httpx.Response) -> str:
        hint = " (check MMRAG_LLM__API_KEY)" if response.status_code in {401, 403} else ""
        try:
            detail = response.json().get("error", {}).get("message", "")
        except ValueError:
            detail = response.text[:200]
        return f"the language model answered {response.status_code}{hint}: {detail}".rstrip(": ")

    def _parse(self, response: httpx.Response) -> Completion:
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            msg = "the language model's answer is not an OpenAI chat completion"
            raise LLMError(msg) from exc
        if not isinstance(content, str):
            raise LLMError("the language model's answer has no text content")
        return Completion(text=content, model=str(data.get("model") or self._model))

    async def aclose(self) -> None:
        await self._client.aclose()
