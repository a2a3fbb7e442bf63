"""``ExtractiveLLM``: no language model at all; the answer quotes the best sources.

From each of the top sources it quotes the sentences that share the most words with the
question, in their original order. Useful offline and as a baseline: it cannot invent anything,
and its answers say so.
"""

from __future__ import annotations

import re

from app.core.ports import Completion, CompletionRequest, ContextSource

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
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


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


class ExtractiveLLM:
    @property
    def name(self) -> str:
        return "extractive"

    async def complete(self, request: CompletionRequest) -> Completion:
        lines = ["Extractive answer (no language model; quoting the most relevant sources):"]
        for source in request.sources[:_QUOTED_SOURCES]:
            quote = best_sentences(request.question, _body(source)) or "(no text)"
            lines.append(f"- {source.label}: {quote} [{source.number}]")
        return Completion(text="\n".join(lines), model="quotes", extractive=True)

    async def aclose(self) -> None:
        return None
