"""The question-answering use case: retrieve, then answer. Every way in calls this one flow:
``/v1/ask``, ``/v1/chat``, ``/v1/chat/completions`` and the LangChain retriever (retrieval
only).

Retrieval is CPU work (embedding, engine search); the caller supplies ``offload`` to run it away
from its event loop (the HTTP layer uses a worker thread with a capacity limiter). Below the
relevance threshold no model is called and the answer says the library does not hold it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from app.core.answering import AnswerEvent, AnswerStrategy, Delta, final_answer
from app.core.errors import LLMError
from app.core.models import Answer, AnswerStatus, SearchFilters
from app.core.ports import ChatMessage, GenerationRequest, LanguageModel, VectorCollection
from app.core.prompts import PromptSet
from app.core.retrieval import Retrieval, Retriever

log = logging.getLogger(__name__)

T = TypeVar("T")
Offload = Callable[[Callable[[], T]], Awaitable[T]]

_QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}
_CHARS_PER_TOKEN = 4  # a budget estimate; exact counts would tie the core to one tokenizer


@dataclass(frozen=True, slots=True)
class Retrieved:
    """The first event of a streamed answer: what was found, before any text."""

    retrieval: Retrieval
    query: str  # the query that was searched (a chat follow-up, rewritten)


QAEvent = Retrieved | AnswerEvent


@dataclass(frozen=True, slots=True)
class Rewrite:
    search: str  # what retrieval looks for
    ask: str  # what the answer strategy is asked


@dataclass(frozen=True, slots=True)
class QAResult:
    answer: Answer
    retrieval: Retrieval
    query: str


def trim_history(messages: Sequence[ChatMessage], budget_tokens: int) -> list[ChatMessage]:
    """The most recent messages that fit the budget (the last one always stays)."""
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(messages):
        cost = len(message.content) // _CHARS_PER_TOKEN + 4
        if kept and used + cost > budget_tokens:
            break
        kept.append(message)
        used += cost
    return list(reversed(kept))


class QuestionAnswering:
    def __init__(
        self,
        retriever: Retriever,
        strategy: AnswerStrategy,
        prompts: PromptSet,
        *,
        offload: Offload[Any],
        rewriter: LanguageModel | None = None,
        history_budget_tokens: int = 1500,
    ) -> None:
        self._retriever = retriever
        self._strategy = strategy
        self._prompts = prompts
        self._offload = offload
        self._rewriter = rewriter
        self._history_budget = history_budget_tokens

    @property
    def strategy(self) -> AnswerStrategy:
        return self._strategy

    async def retrieve(
        self, collection: VectorCollection, query: str, *, top_k: int, filters: SearchFilters
    ) -> Retrieval:
        result: Retrieval = await self._offload(
            lambda: self._retriever.search_text(collection, query, top_k=top_k, filters=filters)
        )
        return result

    async def stream(
        self,
        collection: VectorCollection,
        question: str,
        *,
        top_k: int,
        filters: SearchFilters,
        history: Sequence[ChatMessage] = (),
    ) -> AsyncIterator[QAEvent]:
        """``Retrieved``, then text ``Delta``s, then the final ``Answer``."""
        rewrite = await self.rewrite(question, history) if history else Rewrite(question, question)
        retrieval = await self.retrieve(collection, rewrite.search, top_k=top_k, filters=filters)
        yield Retrieved(retrieval, rewrite.search)
        relevant = retrieval.relevant_hits
        if not relevant:
            answer = self.nothing_found(question)
            yield Delta(answer.text)
            yield answer
            return
        async for event in self._strategy.stream(rewrite.ask, relevant):
            yield event

    async def ask(
        self,
        collection: VectorCollection,
        question: str,
        *,
        top_k: int,
        filters: SearchFilters,
        history: Sequence[ChatMessage] = (),
    ) -> QAResult:
        retrieved: Retrieved | None = None
        events = self.stream(collection, question, top_k=top_k, filters=filters, history=history)

        async def answers() -> AsyncIterator[AnswerEvent]:
            nonlocal retrieved
            async for event in events:
                if isinstance(event, Retrieved):
                    retrieved = event
                else:
                    yield event

        answer = await final_answer(answers())
        assert retrieved is not None  # the stream always starts with it
        return QAResult(answer, retrieved.retrieval, retrieved.query)

    def nothing_found(self, question: str) -> Answer:
        """Written from the prompt template: no model was asked, and the answer says so."""
        return Answer(
            text=self._prompts.nothing_found.render(question=question),
            status=AnswerStatus.NOTHING_FOUND,
            citations=(),
            provider="none",
            model="none",
            prompt_version=self._prompts.version,
        )

    async def standalone_query(self, question: str, history: Sequence[ChatMessage]) -> str:
        """A follow-up ("and the second one?") rewritten into a query that stands alone."""
        return (await self.rewrite(question, history)).search

    async def rewrite(self, question: str, history: Sequence[ChatMessage]) -> Rewrite:
        """What to search and what to ask the model, for a question that follows others."""
        asked = [
            m.content
            for m in trim_history([m for m in history if m.role == "user"], self._history_budget)
        ]
        if not asked:
            return Rewrite(question, question)
        if self._rewriter is None:
            return Rewrite(_joined_query(question, asked), question)
        query = await self._model_rewrite(question, asked)
        if query and _keeps_words_of(question, query):
            return Rewrite(query, query)  # a true standalone question: search and ask it
        # A small model may drop the follow-up itself: search both, ask the follow-up as it
        # was put (the sources found for both tell the model what "her" or "it" is).
        return Rewrite(_one_line(f"{query} {question}"), question)

    async def _model_rewrite(self, question: str, asked: Sequence[str]) -> str:
        assert self._rewriter is not None
        transcript = "\n".join(f"- {_one_line(text)}" for text in asked)
        prompt = self._prompts.rewrite.render(history=transcript, question=question)
        json_mode = self._rewriter.supports_json_schema
        if json_mode:
            prompt += "\n\n" + self._prompts.rewrite_format.render()
        request = GenerationRequest(
            messages=(ChatMessage("user", prompt),),
            max_tokens=96,
            temperature=0.0,
            json_schema=_QUERY_SCHEMA if json_mode else None,
        )
        try:
            text = await self._rewriter.complete(request)
            return _parse_query(text) if json_mode else _one_line(text)
        except (LLMError, ValueError) as exc:
            log.warning("query rewrite failed (%s); searching the joined questions instead", exc)
            return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_query(text: str) -> str:
    data = json.loads(text)
    query = data.get("query") if isinstance(data, dict) else None
    if not isinstance(query, str):
        raise ValueError(f"no query in {text[:100]!r}")
    return _one_line(query)


_WORDS = re.compile(r"\w+")
# Words that carry no subject of their own in a follow-up ("and when is her ...?").
_REFERRING = frozenset(
    (  # noqa: SIM905 - a word list reads best as words
        "a an and the of to in on at for is are was were be do does did what when where which "
        "who how why it its her his their them they she he this that these those one ones about "
        "much many"
    ).split()
)


def _keeps_words_of(question: str, query: str) -> bool:
    """Whether every word the follow-up itself brings ("weigh", "winter") is in the rewrite."""
    wanted = {w for w in _WORDS.findall(question.lower()) if w not in _REFERRING}
    have = set(_WORDS.findall(query.lower()))
    return all(
        any(h.startswith(w) or w.startswith(h) for h in have if len(h) > 2) or w in have
        for w in wanted
    )


def _joined_query(question: str, asked: Sequence[str]) -> str:
    """Without a model: the previous question gives a short follow-up its subject."""
    if len(_WORDS.findall(question)) >= 8 or not asked:
        return question
    return _one_line(f"{asked[-1]} {question}")
