"""``LangChainChatLLM``: any LangChain chat model behind the language-model port.

``MMRAG_LLM__PROVIDER=langchain`` with ``MMRAG_LLM__MODEL=provider:model`` builds the model with
LangChain's ``init_chat_model`` (``ollama:llama3.2``, ``anthropic:claude-…``, ``openai:gpt-4o``…),
so every provider whose integration package is installed plugs in without code changes.
LangChain's message types stay inside this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from app.core.errors import (
    ConfigurationError,
    LLMError,
    LLMRateLimitedError,
    LLMTimeoutError,
    ModelUnavailableError,
)
from app.core.ports import ChatMessage, GenerationRequest

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage


def init_langchain_model(name: str, **kwargs: Any) -> BaseChatModel:
    """``provider:model`` through ``init_chat_model``, with errors that say what to install."""
    if ":" not in name:
        msg = f"MMRAG_LLM__MODEL={name!r}: the langchain provider needs 'provider:model'"
        raise ConfigurationError(msg)
    from langchain.chat_models import init_chat_model

    try:
        model: BaseChatModel = init_chat_model(name, **kwargs)
    except ImportError as exc:
        provider = name.split(":", 1)[0]
        msg = (
            f"LangChain's {provider!r} integration is not installed ({exc}); "
            f"pip install langchain-{provider.replace('_', '-')}"
        )
        raise ModelUnavailableError(msg) from exc
    except ValueError as exc:
        raise ConfigurationError(f"MMRAG_LLM__MODEL={name!r}: {exc}") from exc
    return model


def _messages(messages: tuple[ChatMessage, ...]) -> list[BaseMessage]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m.role](content=m.content) for m in messages]


def _translate(exc: Exception) -> LLMError:
    """Provider SDKs raise their own types; their names say enough to map them."""
    kind = type(exc).__name__
    if "RateLimit" in kind:
        return LLMRateLimitedError(f"the language model is rate limited: {exc}")
    if "Timeout" in kind:
        return LLMTimeoutError(f"the language model did not answer in time: {exc}")
    return LLMError(f"the language model failed ({kind}): {exc}")


class LangChainChatLLM:
    def __init__(self, chat_model: BaseChatModel, *, name: str, timeout_s: float = 60.0) -> None:
        self._chat = chat_model
        self._name = name
        self._timeout_s = timeout_s

    @property
    def provider(self) -> str:
        return "langchain"

    @property
    def model(self) -> str:
        return self._name

    @property
    def supports_json_schema(self) -> bool:
        return False  # answers carry inline [n] markers: works with every chat model

    @property
    def supports_images(self) -> bool:
        return False

    async def complete(self, request: GenerationRequest) -> str:
        return "".join([piece async for piece in self.stream(request)])

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        chunks = self._chat.astream(
            _messages(request.messages),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        iterator = aiter(chunks)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(iterator), max(deadline - loop.time(), 0))
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    msg = f"the language model did not finish within {self._timeout_s:g} s"
                    raise LLMTimeoutError(msg) from exc
                except Exception as exc:
                    raise _translate(exc) from exc
                if isinstance(chunk.content, str) and chunk.content:
                    yield chunk.content
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        return None
