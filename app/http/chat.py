"""Conversations: ``POST /v1/chat`` (ours, with citations) and the OpenAI-shaped
``POST /v1/chat/completions`` + ``GET /v1/models`` that chat front ends and assistants call.

Both run the core's one question-answering flow; a follow-up is rewritten into a standalone
query before retrieval. On the OpenAI-shaped routes ``model`` picks the collection
(``mmrag:<collection>``, or ``mmrag`` for the default); the client's own system messages are
ignored (the service's prompt governs grounding). Errors there carry both shapes: the problem
details every other route sends, plus OpenAI's ``{"error": {"message", "type", "code"}}``,
which the official clients read to raise their typed exceptions.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import ServerSentEventMessage
from msgspec import Meta, Struct

from app.core.answering import Delta
from app.core.errors import InvalidFieldError, MMRagError, NotFoundError
from app.core.models import Answer
from app.core.ports import ChatMessage
from app.core.qa import QAEvent, Retrieved
from app.http.bodies import json_body
from app.http.controllers import Service
from app.http.openapi import JsonBodyOperation, problem_responses
from app.http.problems import EXCEPTION_HANDLERS
from app.http.schemas import (
    AskResponse,
    CitationOut,
    CollectionName,
    Filters,
    TopK,
    answer_out,
    citations_out,
)
from app.http.streaming import EventStream, sse_events, stream_problem

Role = Literal["system", "user", "assistant"]
Content = Annotated[str, Meta(max_length=20_000)]
MODEL_PREFIX = "mmrag"
_COLLECTION_PROBLEMS = (404, 409, 422, 429, 502, 503, 504)


# The schema says what the handler needs: at least one user message with words in it.
_HAS_QUESTION = {
    "contains": {
        "type": "object",
        "properties": {"role": {"const": "user"}, "content": {"type": "string", "pattern": r"\w"}},
        "required": ["role", "content"],
    },
    "description": "The conversation; its last user message with a word in it is answered.",
}


class ChatTurn(Struct, forbid_unknown_fields=True):
    role: Role
    content: Content


class ChatRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    messages: Annotated[
        list[ChatTurn], Meta(min_length=1, max_length=200, extra_json_schema=_HAS_QUESTION)
    ]
    top_k: TopK | None = None
    collection: CollectionName | None = None
    filters: Filters = msgspec.field(default_factory=Filters)
    stream: bool = False


class ChatResponse(AskResponse, kw_only=True):
    query: str  # what was searched: the last message, or its standalone rewrite


_WORD = re.compile(r"\w")  # the schema's pattern: what it accepts, this accepts


def _conversation(turns: list[tuple[str, str]]) -> tuple[str, tuple[ChatMessage, ...]]:
    """The question (the last user message with words in it) and the user and assistant
    turns before it; system turns are dropped (the service's prompt governs grounding)."""
    asked = [i for i, (role, text) in enumerate(turns) if role == "user" and _WORD.search(text)]
    if not asked:
        raise InvalidFieldError("messages", "needs a user message with a question in it")
    last = asked[-1]
    history = tuple(
        ChatMessage("user" if role == "user" else "assistant", text)
        for role, text in turns[:last]
        if role in {"user", "assistant"} and text.strip()
    )
    return turns[last][1].strip(), history


class ChatController(Controller):
    path = "/v1"
    tags = ["answers"]  # noqa: RUF012

    @post(
        "/chat",
        status_code=200,
        summary="Answer the last message of a conversation, with citations",
        operation_class=JsonBodyOperation.of(ChatRequest, streams=True),
        responses=problem_responses(400, 413, 415, *_COLLECTION_PROBLEMS),
    )
    async def chat(
        self, request: Request[Any, Any, State], service: Service
    ) -> ChatResponse | EventStream:
        """A follow-up ("and the second one?") is rewritten by the model into a standalone
        query before retrieval; the history is trimmed to a token budget. With
        ``"stream": true`` the answer comes as server-sent events: ``hits``, ``delta``s, then
        ``answer`` (this body's shape)."""
        body = await json_body(request, ChatRequest)
        name = service.collection_name(body.collection)
        question, history = _conversation([(t.role, t.content) for t in body.messages])
        filters = body.filters.to_domain()
        if body.stream:
            events = await service.stream(
                question, collection=name, top_k=body.top_k, filters=filters, history=history
            )
            dashboard = await service.dashboard_url(name)
            return EventStream(
                sse_events(
                    events,
                    name,
                    final=lambda a, r: chat_out(
                        a, name, r.query, len(r.retrieval.hits), dashboard=dashboard
                    ),
                    dashboard=dashboard,
                )
            )
        result = await service.ask(
            question, collection=name, top_k=body.top_k, filters=filters, history=history
        )
        return chat_out(
            result.answer,
            name,
            result.query,
            retrieved=len(result.retrieval.hits),
            dashboard=await service.dashboard_url(name),
        )


def chat_out(
    answer: Answer,
    collection: str,
    query: str,
    retrieved: int = 0,
    *,
    dashboard: str | None = None,
) -> ChatResponse:
    base = answer_out(answer, collection, retrieved=retrieved, dashboard=dashboard)
    return ChatResponse(**msgspec.structs.asdict(base), query=query)


# -- the OpenAI shape ---------------------------------------------------------------------------

TextPart = dict[str, Any]


class OpenAIMessage(Struct):
    role: str
    content: Content | list[TextPart] | None = None


class ChatCompletionRequest(Struct, kw_only=True):
    """OpenAI's chat completion request; fields this service does not use are accepted."""

    model: Annotated[str, Meta(min_length=1, max_length=128)] = MODEL_PREFIX
    messages: Annotated[
        list[OpenAIMessage], Meta(min_length=1, max_length=200, extra_json_schema=_HAS_QUESTION)
    ]
    stream: bool = False
    top_k: TopK | None = None  # an extension: how many assets to retrieve


class AssistantMessage(Struct):
    role: str
    content: str


class Choice(Struct):
    index: int
    message: AssistantMessage
    finish_reason: str


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MMRagInfo(Struct):
    status: str
    provider: str
    model: str
    prompt_version: str
    query: str


class ChatCompletion(Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[CitationOut]
    mmrag: MMRagInfo


class ModelCard(Struct):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(Struct):
    object: str
    data: list[ModelCard]


def collection_of_model(model: str, default: str) -> str:
    prefix, _, name = model.partition(":")
    if prefix != MODEL_PREFIX:
        msg = (
            f"model {model!r} is not served here; "
            f"use '{MODEL_PREFIX}' or '{MODEL_PREFIX}:<collection>'"
        )
        raise NotFoundError(msg)
    return name or default


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part.get("text", "")) for part in content or [] if part.get("type") == "text"
    )


def _openai_error(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    def wrapped(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        response = handler(request, exc)
        body = (
            dict(msgspec.structs.asdict(response.content))
            if isinstance(response.content, Struct)
            else dict(response.content)
        )
        status = response.status_code or 500
        body["error"] = {
            "message": body.get("detail", ""),
            "type": "invalid_request_error" if status < 500 else "api_error",
            "code": str(body.get("type", "")).rsplit("/", 1)[-1] or None,
        }
        response.content = body
        return response

    return wrapped


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai-compatible"]  # noqa: RUF012
    exception_handlers = {  # noqa: RUF012
        kind: _openai_error(handler) for kind, handler in EXCEPTION_HANDLERS.items()
    }

    @get("/models", summary="Collections as OpenAI models ('mmrag:<collection>')")
    async def models(self, service: Service) -> ModelList:
        names = await service.collection_names()
        cards = [ModelCard(id=MODEL_PREFIX, object="model", created=0, owned_by="mmrag")]
        cards += [
            ModelCard(id=f"{MODEL_PREFIX}:{n}", object="model", created=0, owned_by="mmrag")
            for n in names
        ]
        return ModelList(object="list", data=cards)

    @post(
        "/chat/completions",
        status_code=200,
        summary="OpenAI-compatible chat completion, grounded in the library",
        operation_class=JsonBodyOperation.of(ChatCompletionRequest, streams=True),
        responses=problem_responses(400, 413, 415, *_COLLECTION_PROBLEMS),
    )
    async def completions(
        self, request: Request[Any, Any, State], service: Service
    ) -> ChatCompletion | EventStream:
        """The reply's content carries ``[n]`` markers; ``citations`` beside ``choices`` say
        what each number is (asset, file, page or time, content and thumbnail URLs)."""
        body = await json_body(request, ChatCompletionRequest)
        name = collection_of_model(body.model, service.default_collection)
        name = service.collection_name(name)
        question, history = _conversation([(m.role, _text(m.content)) for m in body.messages])
        events = await service.stream(
            question,
            collection=name,
            top_k=body.top_k,
            filters=Filters().to_domain(),
            history=history,
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = f"{MODEL_PREFIX}:{name}"
        dashboard = await service.dashboard_url(name)
        if body.stream:
            return EventStream(
                _chunks(events, completion_id, created, model, name, dashboard=dashboard)
            )
        query = question
        answer: Answer | None = None
        async for event in events:
            if isinstance(event, Retrieved):
                query = event.query
            elif isinstance(event, Answer):
                answer = event
        assert answer is not None
        return ChatCompletion(
            id=completion_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[
                Choice(
                    index=0,
                    message=AssistantMessage(role="assistant", content=answer.text),
                    finish_reason="stop",
                )
            ],
            usage=Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
            citations=citations_out(answer, name, dashboard=dashboard),
            mmrag=_info(answer, query),
        )


def _info(answer: Answer, query: str) -> MMRagInfo:
    return MMRagInfo(
        status=answer.status.value,
        provider=answer.provider,
        model=answer.model,
        prompt_version=answer.prompt_version,
        query=query,
    )


def _chunks(
    events: AsyncIterator[QAEvent],
    completion_id: str,
    created: int,
    model: str,
    collection: str,
    *,
    dashboard: str | None,
) -> AsyncIterator[ServerSentEventMessage]:
    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> ServerSentEventMessage:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return ServerSentEventMessage(data=msgspec.json.encode(data).decode())

    async def generate() -> AsyncIterator[ServerSentEventMessage]:
        query = ""
        yield chunk({"role": "assistant", "content": ""}, None)
        try:
            async for event in events:
                if isinstance(event, Retrieved):
                    query = event.query
                elif isinstance(event, Delta):
                    yield chunk({"content": event.text}, None)
                else:
                    yield chunk(
                        {},
                        "stop",
                        citations=citations_out(event, collection, dashboard=dashboard),
                        mmrag=_info(event, query),
                    )
        except MMRagError as exc:
            problem = stream_problem(exc)
            yield ServerSentEventMessage(
                data=msgspec.json.encode(
                    {
                        "error": {
                            "message": problem["detail"],
                            "type": "api_error",
                            "code": problem["type"],
                        }
                    }
                ).decode()
            )
        yield ServerSentEventMessage(data="[DONE]")

    return generate()
