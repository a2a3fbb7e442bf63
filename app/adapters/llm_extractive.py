"""``ExtractiveLLM``: no language model at all; the answer quotes the best sources.

Useful offline and as a baseline: it cannot invent anything, and its answers say so.
"""

from __future__ import annotations

from app.core.ports import Completion, CompletionRequest

_QUOTED_SOURCES = 3
_QUOTE_CHARS = 280


def _quote(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    body = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Image description:")), None
    )
    if body is None:
        body = " ".join(ln for ln in lines if not ln.startswith(("Title:", "Tags:")))
    if len(body) <= _QUOTE_CHARS:
        return body
    cut = body[:_QUOTE_CHARS]
    end = cut.rfind(". ")
    return (cut[: end + 1] if end > _QUOTE_CHARS // 2 else cut.rstrip() + "…").strip()


class ExtractiveLLM:
    @property
    def name(self) -> str:
        return "extractive"

    async def complete(self, request: CompletionRequest) -> Completion:
        lines = ["Extractive answer (no language model; quoting the most relevant sources):"]
        for source in request.sources[:_QUOTED_SOURCES]:
            quote = _quote(source.text) or "(no text)"
            lines.append(f"- {source.label}: {quote} [{source.number}]")
        return Completion(text="\n".join(lines), model="quotes", extractive=True)

    async def aclose(self) -> None:
        return None
