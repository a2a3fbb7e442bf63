"""The layering rule, checked from the source: the core imports no framework, and
ingestion never imports the HTTP layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = (
    "litestar",
    "qdrant_edge",
    "qdrant_client",
    "torch",
    "open_clip",
    "sentence_transformers",
    "httpx",
    "langchain",
    "av",
    "pypdfium2",
    "faster_whisper",
    "ctranslate2",
    "langchain_text_splitters",
    "uvicorn",
    "pydantic_settings",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: Path, banned: tuple[str, ...], root: Path = ROOT) -> dict[str, set[str]]:
    bad: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        hits = {
            m
            for m in imported_modules(path)
            if any(m == b or m.startswith(b + ".") for b in banned)
        }
        if hits:
            bad[str(path.relative_to(root))] = hits
    return bad


def test_core_imports_no_framework_and_no_outer_layer() -> None:
    banned = (*FRAMEWORKS, "app.adapters", "app.http", "app.settings", "app.wiring", "ingestion")
    assert offenders(ROOT / "app" / "core", banned) == {}


def test_ingestion_never_imports_the_http_layer() -> None:
    assert offenders(ROOT / "ingestion", ("app.http", "litestar")) == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "core"
    bad.mkdir()
    (bad / "m.py").write_text("import torch\nfrom litestar import get\n")
    assert offenders(bad, FRAMEWORKS, tmp_path) == {"core/m.py": {"torch", "litestar"}}
