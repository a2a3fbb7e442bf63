"""Packaged models: assembled from parts, checked by SHA-256, never half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.adapters.packaged_models import (
    WHISPER_BASE,
    PackageData,
    PackagedFile,
    PackagedModel,
    ensure_packaged,
)
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


def folder_model(small_sha256: str) -> PackagedModel:
    """Two files: one copied from package data, one concatenated from two parts."""
    whole = b"".join(DATA)
    return PackagedModel(
        name="tiny-folder",
        description="a tiny test model folder",
        files=(
            PackagedFile(
                name="config.txt",
                parts=(PackageData("tests", ".parts/part1.bin"),),
                size=len(DATA[1]),
                sha256=small_sha256,
            ),
            PackagedFile(
                name="model.bin",
                parts=((__name__, "part_one"), (__name__, "part_two")),
                size=len(whole),
                sha256=hashlib.sha256(whole).hexdigest(),
            ),
        ),
    )


def test_a_folder_model_is_assembled_file_by_file_with_one_progress(tmp_path: Path) -> None:
    _write(1)  # the package data the copied file comes from
    tiny = folder_model(hashlib.sha256(DATA[1]).hexdigest())
    seen: list[tuple[str, int, int]] = []
    folder = ensure_packaged(tiny, tmp_path, fetch=True, progress=lambda *args: seen.append(args))
    assert folder == tmp_path / "tiny-folder"
    assert (folder / "config.txt").read_bytes() == DATA[1]
    assert (folder / "model.bin").read_bytes() == b"".join(DATA)
    assert sorted(p.name for p in folder.iterdir()) == ["config.txt", "model.bin"]
    total = len(DATA[1]) + len(b"".join(DATA))
    assert {t for _, _, t in seen} == {total}  # one bar over the whole folder
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
    assert seen[-1] == ("model.bin", total, total)

    # A damaged file is found without fetch and is the only one assembled again.
    (folder / "config.txt").write_bytes(b"X" * len(DATA[1]))
    with pytest.raises(ModelUnavailableError, match=r"config\.txt.*python -m app models fetch"):
        ensure_packaged(tiny, tmp_path, fetch=False)
    seen.clear()
    ensure_packaged(tiny, tmp_path, fetch=True, progress=lambda *args: seen.append(args))
    assert {name for name, _, _ in seen} == {"config.txt"}
    assert seen[-1][1:] == (len(DATA[1]), len(DATA[1]))
    assert (folder / "config.txt").read_bytes() == DATA[1]


def test_missing_package_data_names_the_package(tmp_path: Path) -> None:
    absent = PackagedModel(
        name="absent",
        description="a model whose data is missing",
        files=(
            PackagedFile(
                name="a.bin", parts=(PackageData("tests", ".parts/nope.bin"),), size=1, sha256="0"
            ),
        ),
    )
    with pytest.raises(ModelUnavailableError, match=r"nope\.bin is missing"):
        ensure_packaged(absent, tmp_path, fetch=True)
    not_installed = PackagedModel(
        name="absent",
        description="a model whose package is missing",
        files=(
            PackagedFile(
                name="a.bin", parts=(PackageData("no_such_pkg_xyz", "a"),), size=1, sha256="0"
            ),
        ),
    )
    with pytest.raises(ModelUnavailableError, match="no-such-pkg-xyz is not installed"):
        ensure_packaged(not_installed, tmp_path, fetch=True)


def test_the_real_whisper_base_assembles_and_verifies(tmp_path: Path) -> None:
    folder = ensure_packaged(WHISPER_BASE, tmp_path, fetch=True)
    assert folder == tmp_path / "whisper-base-ct2"
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert sizes == {f.name: f.size for f in WHISPER_BASE.files}
    assert sizes["model.bin"] == 145_217_532
    assert not list(folder.glob("*.partial"))
    assert ensure_packaged(WHISPER_BASE, tmp_path, fetch=False) == folder
