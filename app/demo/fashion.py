"""Fashion-MNIST for the demo: labelled product photos to train the project's own CLIP on.

Debian's ``dataset-fashion-mnist`` installs the four IDX files under
``/usr/share/datasets/fashion-mnist``. Training pairs are the 60k training photos with captions
made from their labels (several templates); the library the demo ingests is a sample of the
held-out test photos written with neutral names and **no captions**, so a text question can
only find them through the trained CLIP.
"""

from __future__ import annotations

import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = (
    "t-shirt",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandals",
    "shirt",
    "sneakers",
    "bag",
    "ankle boots",
)
TEMPLATES = (
    "{}",
    "a photo of {}",
    "a product photo of {}",
    "a catalogue picture of {}",
    "{} on a plain background",
)
QUESTIONS = ("ankle boots", "a bag", "sneakers", "a dress", "trousers")


def _articled(label: str) -> str:
    plural = label.endswith("s")
    return label if plural else f"a {label}"


def captions_for(label: int) -> list[str]:
    """Every caption the templates make for one label."""
    name = _articled(LABELS[label])
    return [t.format(name) for t in TEMPLATES]


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file (gzipped) as an array: (n, rows, cols) for images, (n,) for labels."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic, count = struct.unpack(">II", data[:8])
    dims = magic & 0xFF
    shape = [count, *struct.unpack(">" + "I" * (dims - 1), data[8 : 4 * (dims + 1)])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (dims + 1)).reshape(shape)


def _load(split: str, dataset: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    prefix = "train" if split == "train" else "t10k"
    missing = [
        p
        for p in (
            dataset / f"{prefix}-images-idx3-ubyte.gz",
            dataset / f"{prefix}-labels-idx1-ubyte.gz",
        )
        if not p.is_file()
    ]
    if missing:
        msg = (
            f"Fashion-MNIST is not installed ({missing[0]} is missing): install the Debian "
            "package dataset-fashion-mnist (scripts/system-deps.sh does)"
        )
        raise FileNotFoundError(msg)
    images = read_idx(dataset / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(dataset / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def write_training_pairs(
    out: Path,
    *,
    limit: int | None = None,
    held_out: int = 3000,
    dataset: Path = DATASET_DIR,
    seed: int = 0,
) -> Path:
    """Writes the training photos as PNGs with a ``pairs.csv`` (image, caption, split) beside
    them. Training photos get one caption, its template chosen at random (seeded); the last
    ``held_out`` photos form the ``val`` split with every template's caption (one per line), so
    held-out recall asks "does 'a bag' find bags", whatever the wording. Returns the CSV's path.
    Idempotent: an existing complete CSV is reused."""
    csv_path = out / "pairs.csv"
    if csv_path.is_file():
        return csv_path
    images, labels = _load("train", dataset)
    count = len(images) if limit is None else min(limit, len(images))
    rng = np.random.default_rng(seed)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        name = f"images/{i:05d}.png"
        Image.fromarray(images[i]).save(out / name, optimize=False, compress_level=1)
        captions = captions_for(int(labels[i]))
        if i >= count - held_out:
            rows.append((name, "\n".join(captions), "val"))
        else:
            rows.append((name, str(rng.choice(captions)), "train"))
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption", "split"])
        writer.writerows(rows)
    tmp.replace(csv_path)
    return csv_path


def write_test_library(
    out: Path, *, per_label: int = 12, dataset: Path = DATASET_DIR
) -> dict[str, str]:
    """Writes ``per_label`` held-out test photos of each label as ``item-NNNN.png`` (neutral
    names, no captions) and returns {file name: label}; the labels are also saved beside the
    folder (``<out>.labels.json``), never inside it, so ingestion cannot read them."""
    images, labels = _load("test", dataset)
    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, str] = {}
    counts = [0] * len(LABELS)
    for i, label in enumerate(labels.tolist()):
        if counts[label] >= per_label:
            continue
        counts[label] += 1
        name = f"item-{i:04d}.png"
        target = out / name
        if not target.exists():
            Image.fromarray(images[i]).save(target)
        chosen[name] = LABELS[label]
        if sum(counts) == per_label * len(LABELS):
            break
    out.with_name(out.name + ".labels.json").write_text(json.dumps(chosen, indent=1))
    return chosen


def write_queries(path: Path, library: Path, labels: dict[str, str]) -> Path:
    """The ``eval``/``calibrate`` query file for the test library: one text query per label
    ("ankle boots"), whose relevant assets are that label's photos (paths relative to
    ``path``'s folder)."""
    lines = []
    for label in LABELS:
        files = sorted(name for name, of in labels.items() if of == label)
        relevant = [str((library / name).relative_to(path.parent)) for name in files]
        lines.append(json.dumps({"id": label, "text": label, "relevant": relevant}))
    path.write_text("\n".join(lines) + "\n")
    return path
