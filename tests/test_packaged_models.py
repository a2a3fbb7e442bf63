"""Packaged models: assembled from parts, checked by SHA-256, never half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.adapters.packaged_models import PackagedFile, PackagedModel, ensure_packaged
from app.core.errors import ModelUnavailableError

PARTS_DIR = Path(__file__).resolve().parent / ".parts"
DATA = (b"first part, ", b"second part.")


def part_one() -> str:
    return _write(0)


def part_two() -> str:
    return _write(1)


def _write(n: int) -> str:
    PARTS_DIR.mkdir(exist_ok=True)
    path = PARTS_DIR / f"part{n}.bin"
    path.write_bytes(DATA[n])
    return str(path)


def model(sha256: str) -> PackagedModel:
    whole = b"".join(DATA)
    return PackagedModel(
        name="tiny",
        description="a tiny test model",
        files=(
            PackagedFile(
                name="tiny.bin",
                parts=((__name__, "part_one"), (__name__, "part_two")),
                size=len(whole),
                sha256=sha256,
            ),
        ),
    )


def test_parts_are_assembled_checked_and_then_reused(tmp_path: Path) -> None:
    good = model(hashlib.sha256(b"".join(DATA)).hexdigest())
    with pytest.raises(ModelUnavailableError, match="python -m app models fetch"):
        ensure_packaged(good, tmp_path, fetch=False)
    folder = ensure_packaged(good, tmp_path, fetch=True)
    assert (folder / "tiny.bin").read_bytes() == b"".join(DATA)
    assert ensure_packaged(good, tmp_path, fetch=False) == folder  # no fetch needed any more


def test_a_wrong_digest_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="expected 24 bytes"):
        ensure_packaged(model("0" * 64), tmp_path, fetch=True)
    assert list((tmp_path / "tiny").iterdir()) == []
