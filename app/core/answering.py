"""Answering: retrieved hits in, a grounded answer with numbered citations out.

The model sees each source as a delimited, numbered block and is asked to cite ``[n]``. Any
number it cites that it was not given is removed from the text and never becomes a citation.
With no relevant hit the model is not called at all: the answer says nothing was found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.core.models import Answer, AnswerStatus, Citation, SearchHit, SegmentKind
from app.core.ports import ChatMessage, CompletionRequest, ContextSource, LanguageModel
from app.core.prompts import PromptSet

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def source_label(hit: SearchHit) -> str:
    segment = hit.segment
    asset = segment.asset
    where = []
    if segment.locator.page is not None:
        where.append(f"page {segment.locator.page}")
    if segment.locator.start_s is not None:
        where.append(f"at {segment.locator.start_s:.1f}s")
    if segment.kind is SegmentKind.TEXT_CHUNK and segment.count > 1:
        where.append(f"part {segment.index + 1} of {segment.count}")
    name = asset.source.rsplit("/", 1)[-1]
    suffix = f" ({', '.join(where)})" if where else ""
    return f"{asset.modality.value}: {name}{suffix}"


def source_text(hit: SearchHit, max_chars: int) -> str:
    segment = hit.segment
    parts = [f"Title: {segment.asset.title}"]
    if segment.asset.tags:
        parts.append(f"Tags: {', '.join(segment.asset.tags)}")
    body = (segment.text or segment.asset.caption or "").strip()
    if segment.kind is SegmentKind.IMAGE:
        parts.append(f"Image description: {body}" if body else "Image with no description.")
    else:
        parts.append(body)
    text = "\n".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def render_context(sources: Sequence[ContextSource]) -> str:
    blocks = []
    for source in sources:
        # The delimiter cannot be closed from inside retrieved text.
        body = source.text.replace("</source>", "</ source>")
        blocks.append(f'<source id="{source.number}" label="{source.label}">\n{body}\n</source>')
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


class Answerer:
    def __init__(
        self,
        llm: LanguageModel,
        prompts: PromptSet,
        *,
        max_source_chars: int = 1200,
        max_tokens: int = 512,
        temperature: float = 0.1,
    ) -> None:
        self._llm = llm
        self._prompts = prompts
        self._max_source_chars = max_source_chars
        self._max_tokens = max_tokens
        self._temperature = temperature

    async def answer(self, question: str, relevant_hits: Sequence[SearchHit]) -> Answer:
        if not relevant_hits:
            return Answer(
                text=self._prompts.nothing_found.render(question=question),
                status=AnswerStatus.NOTHING_FOUND,
                citations=(),
                provider=self._llm.name,
                prompt_version=self._prompts.version,
            )
        sources = tuple(
            ContextSource(
                number=n,
                label=source_label(hit),
                text=source_text(hit, self._max_source_chars),
            )
            for n, hit in enumerate(relevant_hits, start=1)
        )
        messages = (
            ChatMessage("system", self._prompts.system.render()),
            ChatMessage(
                "user",
                self._prompts.answer.render(question=question, context=render_context(sources)),
            ),
        )
        completion = await self._llm.complete(
            CompletionRequest(
                question=question,
                messages=messages,
                sources=sources,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
            )
        )
        text, cited = extract_citations(completion.text, {s.number for s in sources})
        return Answer(
            text=text,
            status=AnswerStatus.EXTRACTIVE if completion.extractive else AnswerStatus.ANSWERED,
            citations=tuple(Citation(number=n, hit=relevant_hits[n - 1]) for n in cited),
            provider=f"{self._llm.name}:{completion.model}",
            prompt_version=self._prompts.version,
        )
