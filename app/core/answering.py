"""Answer strategies: relevant hits in, a grounded answer with numbered citations out.

Two strategies stand side by side behind one small protocol:

- ``ModelAnswers`` asks a language model. Each source is a delimited, numbered block labelled as
  untrusted library data. With a model that honours a JSON schema (the local GGUF model) the
  output is constrained to ``{"answer": str, "sources": [int]}`` and the answer gets its ``[n]``
  markers from ``sources``; other models write ``[n]`` markers inline. Either way only numbers
  that were given survive, an answer that cites nothing is marked ungrounded (or "no answer"
  when it says the sources do not hold it), and unusable output is an error, never an answer.
- ``ExtractiveAnswers`` needs no model: it quotes the sentences that best match the question.

Both stream: text deltas as they are written, then the final ``Answer``. Deciding that nothing
relevant was found happens before any strategy runs (see ``app.core.qa``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from app.core.errors import LLMOutputError
from app.core.models import Answer, AnswerStatus, Citation, SearchHit, SegmentKind
from app.core.ports import ChatMessage, GenerationRequest, ImagePart, LanguageModel
from app.core.prompts import PromptSet

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# What a model says when the sources do not hold the answer (then citing nothing is honest).
_REFUSAL = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|answer|tell|find)|"
    r"(does|do) not (contain|mention|say|include|answer|provide)|"
    r"(no|not enough) (information|mention|details?)|not (mentioned|found|stated)|unknown)\b",
    re.IGNORECASE,
)
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "sources": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["answer", "sources"],
}


_QUOTED_SOURCES = 3
_SENTENCES_PER_SOURCE = 2
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads best as words
        "a an and are as at be by do does for from how i in is it of on or the this to was what "
        "when where which who why with you your"
    ).split()
)


def _words(text: str) -> set[str]:
    """Content words, a plural's final "s" dropped ("Tuesdays" and "Tuesday" are one word)."""
    return {_singular(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss") and word.isalpha():
        return word[:-1]
    return word


@dataclass(frozen=True, slots=True)
class ContextSource:
    """One numbered source as the model sees it."""

    number: int
    label: str
    text: str


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer's text, as it is written."""

    text: str


AnswerEvent = Delta | Answer


class AnswerStrategy(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    def stream(self, question: str, hits: Sequence[SearchHit]) -> AsyncIterator[AnswerEvent]:
        """Deltas, then exactly one final ``Answer``. ``hits`` are relevant (never empty)."""
        ...


async def final_answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    answer: Answer | None = None
    async for event in events:
        if isinstance(event, Answer):
            answer = event
    if answer is None:  # pragma: no cover - every strategy ends with an Answer
        raise LLMOutputError("the answer strategy ended without an answer")
    return answer


def clock(seconds: float) -> str:
    """``75.5`` -> ``1:15.5``; ``3725`` -> ``1:02:05``."""
    minutes, secs = divmod(round(seconds, 1), 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:04.1f}".removesuffix(".0")
    if len(text) == 1:
        text = "0" + text
    return f"{hours}:{minutes:02d}:{text}" if hours else f"{minutes}:{text}"


def source_label(hit: SearchHit) -> str:
    segment = hit.segment
    asset = segment.asset
    where = []
    if segment.locator.page is not None:
        where.append(f"page {segment.locator.page}")
    start, end = segment.locator.start_s, segment.locator.end_s
    if start is not None:
        where.append(f"at {clock(start)}" if end is None else f"{clock(start)}-{clock(end)}")
    if segment.kind is SegmentKind.TEXT_CHUNK and segment.count > 1 and not where:
        where.append(f"part {segment.index + 1} of {segment.count}")
    name = asset.source.rsplit("/", 1)[-1]
    suffix = f" ({', '.join(where)})" if where else ""
    return f"{asset.modality.value}: {name}{suffix}"


# Sentences in retrieved text that address the model rather than the reader. Their words are
# withheld (the source says so) instead of being handed to a model that may obey them.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(instructions?|rules?|prompts?|"
    r"directions?|guidelines?)\b|\b(system|developer) (notice|prompt|message|instruction)s?\b|"
    r"\b(reply|respond|answer|say|output)( only)? (with|that)\b|\byou (are|must) now\b|"
    r"\bnew instructions?\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
WITHHELD = "[instruction-like text withheld]"


def neutralize_instructions(text: str) -> str:
    """Withhold sentences that try to instruct the model (prompt injection in a document)."""
    if not _INSTRUCTION.search(text):
        return text
    out: list[str] = []
    for sentence in _SENTENCE.findall(text):
        if _INSTRUCTION.search(sentence):
            if not out or out[-1] != WITHHELD:
                out.append(WITHHELD)
        elif sentence:
            out.append(sentence)
    return " ".join(part.strip() for part in out if part.strip())


def source_text(hit: SearchHit, max_chars: int) -> str:
    segment = hit.segment
    parts = [f"Title: {segment.asset.title}"]
    if segment.asset.tags:
        parts.append(f"Tags: {', '.join(segment.asset.tags)}")
    body = neutralize_instructions((segment.text or segment.asset.caption or "").strip())
    if segment.kind is SegmentKind.IMAGE:
        parts.append(f"Image description: {body}" if body else "Image with no description.")
    else:
        parts.append(body)
    text = "\n".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def context_sources(hits: Sequence[SearchHit], max_chars: int) -> tuple[ContextSource, ...]:
    return tuple(
        ContextSource(number=n, label=source_label(hit), text=source_text(hit, max_chars))
        for n, hit in enumerate(hits, start=1)
    )


def render_context(sources: Sequence[ContextSource]) -> str:
    blocks = []
    for source in sources:
        # The delimiter cannot be closed (or a new source opened) from inside retrieved text.
        body = source.text.replace("</source", "</ source").replace("<source", "< source")
        label = source.label.replace('"', "'")
        blocks.append(
            f'<source id="{source.number}" label="{label}" trust="untrusted library data">\n'
            f"{body}\n</source>"
        )
    return "\n\n".join(blocks)


def extract_citations(text: str, valid: set[int]) -> tuple[str, list[int]]:
    """Keep citation markers that name a given source; drop the rest from the text."""
    cited: list[int] = []

    def keep(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        good = [n for n in numbers if n in valid]
        for n in good:
            if n not in cited:
                cited.append(n)
        return f"[{', '.join(str(n) for n in good)}]" if good else ""

    cleaned = _CITATION.sub(keep, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), cited


def supported(answer: str, cited_texts: Sequence[str], *, share: float = 0.5) -> bool:
    """Whether most of the answer's own words (numbers included) stand in the sources it
    cites: a cheap check that catches claims a model made up and pinned on a real source."""
    words = _words(_CITATION.sub(" ", answer))
    if not words:
        return True
    found = set().union(*(_words(t) for t in cited_texts)) if cited_texts else set()
    return len(words & found) >= share * len(words)


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


class MarkerFilter:
    """Streams text while holding back a ``[...`` run until it closes, so markers naming
    sources that were not given never reach a client, not even for a moment."""

    _MAX_HELD = 24

    def __init__(self, valid: set[int]) -> None:
        self._valid = valid
        self._held = ""

    def feed(self, piece: str) -> str:
        self._held += piece
        out = []
        while self._held:
            start = self._held.find("[")
            if start < 0:
                out.append(self._held)
                self._held = ""
                break
            out.append(self._held[:start])
            self._held = self._held[start:]
            end = self._held.find("]")
            if end < 0:
                if len(self._held) > self._MAX_HELD:  # not a marker: let it through
                    out.append(self._held)
                    self._held = ""
                break
            marker, self._held = self._held[: end + 1], self._held[end + 1 :]
            out.append(
                extract_citations(marker, self._valid)[0] if _CITATION.fullmatch(marker) else marker
            )
        return "".join(out)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


_JSON_ESCAPES = MappingProxyType(
    {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
)


class JsonAnswerText:
    """Pulls the ``answer`` string out of streamed ``{"answer": "...", ...}`` as it grows."""

    _START = re.compile(r'\{\s*"answer"\s*:\s*"')

    def __init__(self) -> None:
        self.raw = ""
        self._pos: int | None = None  # index in raw of the next answer character
        self._done = False

    def feed(self, piece: str) -> str:
        self.raw += piece
        if self._done:
            return ""
        if self._pos is None:
            match = self._START.match(self.raw.lstrip())
            if not match:
                return ""
            self._pos = len(self.raw) - len(self.raw.lstrip()) + match.end()
        out = []
        raw, i = self.raw, self._pos
        while i < len(raw):
            ch = raw[i]
            if ch == '"':
                self._done = True
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(raw):
                break  # wait for the escaped character
            code = raw[i + 1]
            if code == "u":
                if i + 6 > len(raw):
                    break
                try:
                    out.append(chr(int(raw[i + 2 : i + 6], 16)))
                except ValueError:
                    out.append("?")
                i += 6
                continue
            out.append(_JSON_ESCAPES.get(code, code))
            i += 2
        self._pos = i
        return "".join(out)


class OutputMode(StrEnum):
    JSON = "json"  # constrained to ANSWER_SCHEMA; markers come from "sources"
    MARKERS = "markers"  # free text with inline [n] markers


ImageLoader = Callable[[SearchHit], ImagePart | None]


class ModelAnswers:
    """Answers written by a language model, grounded in the numbered sources."""

    def __init__(
        self,
        llm: LanguageModel,
        prompts: PromptSet,
        *,
        output: OutputMode | None = None,
        max_source_chars: int = 1200,
        max_tokens: int = 512,
        temperature: float = 0.1,
        images: ImageLoader | None = None,
    ) -> None:
        self._llm = llm
        self._prompts = prompts
        self._output = output or (
            OutputMode.JSON if llm.supports_json_schema else OutputMode.MARKERS
        )
        self._max_source_chars = max_source_chars
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._images = images if llm.supports_images else None

    @property
    def provider(self) -> str:
        return self._llm.provider

    @property
    def model(self) -> str:
        return self._llm.model

    def request(self, question: str, hits: Sequence[SearchHit]) -> GenerationRequest:
        sources = context_sources(hits, self._max_source_chars)
        json_mode = self._output is OutputMode.JSON
        system = self._prompts.system.render()
        user = self._prompts.answer.render(question=question, context=render_context(sources))
        if json_mode:
            user += "\n\n" + self._prompts.json_format.render()
        pictures = tuple(p for hit in hits if self._images and (p := self._images(hit)))
        return GenerationRequest(
            messages=(ChatMessage("system", system), ChatMessage("user", user, pictures)),
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            json_schema=ANSWER_SCHEMA if json_mode else None,
        )

    async def stream(self, question: str, hits: Sequence[SearchHit]) -> AsyncIterator[AnswerEvent]:
        request = self.request(question, hits)
        valid = set(range(1, len(hits) + 1))
        markers = MarkerFilter(valid)
        if self._output is OutputMode.JSON:
            extractor = JsonAnswerText()
            async for piece in self._llm.stream(request):
                if shown := markers.feed(extractor.feed(piece)):
                    yield Delta(shown)
            text, appended = self._parse_json(extractor.raw, valid)
            tail = markers.flush()
            suffix = f" [{', '.join(map(str, appended))}]" if appended else ""
            if tail or suffix:
                yield Delta(extract_citations(tail, valid)[0] + suffix)
            text = f"{text}{suffix}"
        else:
            raw = []
            async for piece in self._llm.stream(request):
                raw.append(piece)
                if shown := markers.feed(piece):
                    yield Delta(shown)
            if tail := markers.flush():
                yield Delta(tail)
            text = extract_citations("".join(raw), valid)[0]
        yield self._answer(text, hits)

    @staticmethod
    def _parse_json(raw: str, valid: set[int]) -> tuple[str, list[int]]:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"the language model's output is not the JSON asked for: {raw[:200]!r}"
            raise LLMOutputError(msg) from exc
        answer, sources = (
            (data.get("answer"), data.get("sources")) if isinstance(data, dict) else (None, None)
        )
        if not isinstance(answer, str) or not isinstance(sources, list):
            raise LLMOutputError(f"the language model's JSON lacks answer/sources: {raw[:200]!r}")
        text, inline = extract_citations(answer, valid)
        cited = list(
            dict.fromkeys([*inline, *(n for n in sources if isinstance(n, int) and n in valid)])
        )
        # Inline markers stay where the model put them; the rest are appended by the caller.
        return text, [n for n in cited if n not in inline]

    def _answer(self, text: str, hits: Sequence[SearchHit]) -> Answer:
        """The final answer; ``text`` carries only valid markers by now."""
        _, cited = extract_citations(text, set(range(1, len(hits) + 1)))
        if not text.strip():
            raise LLMOutputError("the language model returned an empty answer")
        sources = context_sources(hits, self._max_source_chars)
        if cited and not supported(text, [sources[n - 1].text for n in cited]):
            status = AnswerStatus.UNGROUNDED  # cites sources that do not carry its words
        elif cited:
            status = AnswerStatus.ANSWERED
        elif looks_like_refusal(text):
            status = AnswerStatus.NO_ANSWER
        else:
            status = AnswerStatus.UNGROUNDED
        return Answer(
            text=text,
            status=status,
            citations=tuple(Citation(number=n, hit=hits[n - 1]) for n in cited),
            provider=self.provider,
            model=self.model,
            prompt_version=self._prompts.version,
        )


def _body(source: ContextSource) -> str:
    """The source's own words, without the Title:/Tags: header lines or Markdown headings."""
    lines = []
    for line in source.text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("Title:", "Tags:", "#")):
            continue
        lines.append(stripped.removeprefix("Image description:").strip())
    return "\n".join(lines)


def best_sentences(question: str, text: str, limit: int = _SENTENCES_PER_SOURCE) -> str:
    flowing = " ".join(text.split())  # hard-wrapped lines belong to one sentence
    sentences = [s.strip() for s in _SENTENCE_END.split(flowing) if s.strip()]
    if not sentences:
        return ""
    wanted = _words(question)
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(wanted & _words(sentences[i])), i))[
        :limit
    ]
    return " ".join(sentences[i] for i in sorted(ranked))


class ExtractiveAnswers:
    """No language model: quotes the sentences of the top sources that match the question.

    It cannot invent anything, and its answers say what they are.
    """

    def __init__(self, prompts: PromptSet, *, max_source_chars: int = 1200) -> None:
        self._prompts = prompts
        self._max_source_chars = max_source_chars

    @property
    def provider(self) -> str:
        return "extractive"

    @property
    def model(self) -> str:
        return "quotes"

    async def stream(self, question: str, hits: Sequence[SearchHit]) -> AsyncIterator[AnswerEvent]:
        sources = context_sources(hits, self._max_source_chars)
        lines = ["Extractive answer (no language model; quoting the most relevant sources):"]
        for source in sources[:_QUOTED_SOURCES]:
            quote = best_sentences(question, _body(source)) or "(no text)"
            lines.append(f"- {source.label}: {quote} [{source.number}]")
        text, cited = extract_citations("\n".join(lines), {s.number for s in sources})
        yield Delta(text)
        yield Answer(
            text=text,
            status=AnswerStatus.EXTRACTIVE,
            citations=tuple(Citation(number=n, hit=hits[n - 1]) for n in cited),
            provider=self.provider,
            model=self.model,
            prompt_version=self._prompts.version,
        )
