"""Prompt templates: files under ``prompts/<version>/``, loaded once and validated at start-up.

Placeholders are written ``{{name}}``. Each template declares which placeholders it must use and
which it may use; a missing or unknown placeholder refuses start-up rather than sending a
broken prompt. Retrieved text is only ever placed in the ``{{context}}`` slot, each source in a
delimited block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import ConfigurationError

_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass(frozen=True, slots=True)
class TemplateRule:
    file: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()


RULES = (
    TemplateRule("system.md", required=frozenset()),
    TemplateRule("answer.md", required=frozenset({"question", "context"})),
    TemplateRule("json_format.md", required=frozenset()),
    TemplateRule("nothing_found.md", required=frozenset(), optional=frozenset({"question"})),
    TemplateRule("rewrite.md", required=frozenset({"history", "question"})),
    TemplateRule("rewrite_format.md", required=frozenset()),
)


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    name: str
    text: str

    def render(self, **values: str) -> str:
        def sub(match: re.Match[str]) -> str:
            return values[match.group(1)]

        return _PLACEHOLDER.sub(sub, self.text).strip()


@dataclass(frozen=True, slots=True)
class PromptSet:
    version: str
    system: PromptTemplate
    answer: PromptTemplate
    json_format: PromptTemplate  # appended to the answer when output is JSON-constrained
    nothing_found: PromptTemplate
    rewrite: PromptTemplate  # a chat follow-up into a standalone query
    rewrite_format: PromptTemplate


def load_prompts(prompts_dir: Path, version: str) -> PromptSet:
    folder = prompts_dir / version
    if not folder.is_dir():
        msg = f"prompt folder {folder} does not exist (settings prompts_dir / prompt_version)"
        raise ConfigurationError(msg)
    loaded: dict[str, PromptTemplate] = {}
    for rule in RULES:
        path = folder / rule.file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"prompt template {path} cannot be read: {exc}") from exc
        used = set(_PLACEHOLDER.findall(text))
        missing = rule.required - used
        unknown = used - rule.required - rule.optional
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing placeholder(s) {sorted(missing)}")
            if unknown:
                parts.append(f"unknown placeholder(s) {sorted(unknown)}")
            raise ConfigurationError(f"prompt template {path}: {'; '.join(parts)}")
        loaded[rule.file.removesuffix(".md")] = PromptTemplate(name=rule.file, text=text)
    return PromptSet(version=version, **loaded)
