"""``python -m ingestion train``: contrastive training of an open_clip model on image-caption pairs.

    python -m ingestion train PAIRS --out DIR [--from CHECKPOINT | --from ARCH:TAG]
                                              [--arch NAME | --arch CONFIG.json] [...]

PAIRS is a folder whose captions ingestion reads (``photo.jpg.txt`` sidecars, one caption a
line; ``captions.csv`` / ``captions.jsonl`` manifests, one row per caption), or a CSV / JSONL
file of (image, caption[, split]) with paths relative to the file's folder. Bad rows and
unreadable images are counted, the first few named, and skipped.

The model, transforms, tokenizer and loss are open_clip's own (``open_clip.ClipLoss``). ``--from``
fine-tunes a local checkpoint or a pretrained tag; ``--arch`` trains from scratch (a built-in
small config from ``ingestion.clip_configs``, an open_clip model name, or a config JSON).

``--out`` receives ``model.pt`` (a state_dict open_clip loads with
``create_model_and_transforms(name, pretrained=".../model.pt")`` once the config is registered),
``open_clip_config.json`` (open_clip's hub format), ``model_card.md`` / ``model_card.json`` and
``last.pt`` (everything ``--resume`` needs). With ``MMRAG_CLIP__CHECKPOINT=DIR/model.pt`` the
service and ingestion load the trained model: the embedder reads the config beside it.

Imports torch and open_clip inside functions only: the CLI imports every command's module to
build its parser.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import math
import os
import pickle
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.adapters.hub import hub_endpoint
from app.adapters.openclip import (
    CHECKPOINT_CONFIG_NAME,
    MODEL_CARD_NAME,
    pretrained_weights,
    read_checkpoint_config,
    register_model_config,
)
from app.core.errors import ConfigurationError, InputError, ModelUnavailableError
from app.core.models import Modality
from app.core.ports import FloatMatrix
from ingestion.clip_configs import BUILTIN_CONFIGS, DESCRIPTIONS, builtin_config
from ingestion.discovery import MANIFEST_NAMES, SIDECAR_SUFFIX, discover

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_SOME_SKIPPED = 0, 1
MODEL_FILE = "model.pt"
RESUME_FILE = "last.pt"
CARD_MD = "model_card.md"
DEFAULT_ARCH = "mmrag-tiny"
DEFAULT_LR_SCRATCH = 1e-3
DEFAULT_LR_FINETUNE = 1e-5
RECALL_KS = (1, 5, 10)
SKIPPED_EXAMPLES = 5
_STATE_FORMAT = 1
_CACHE_LIMIT_BYTES = 2 << 30  # decoded images kept in memory up to this; beyond, read per batch
_IMAGE_KEYS = ("image", "file", "filename", "path")
_CAPTION_KEYS = ("caption", "text", "description")
_TRAIN_SPLITS = frozenset({"train", "training"})
_HELD_OUT_SPLITS = frozenset(
    {"val", "valid", "validation", "test", "eval", "dev", "heldout", "held-out", "held_out"}
)
_CHECKPOINT_NAMES = (  # what a --from folder may hold, preferred first
    MODEL_FILE,
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_LOG_SCALE_MAX = math.log(100)  # CLIP clamps its temperature at 100


class ImageAugment(StrEnum):
    NONE = "none"
    LIGHT = "light"  # random crop (shift and zoom) and horizontal flip


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainOptions:
    """One training run; ``base`` is ``--from``, ``arch`` is ``--arch``."""

    pairs: Path
    out: Path
    base: str | None = None
    arch: str | None = None  # neither base nor arch: DEFAULT_ARCH from scratch
    epochs: int = 10
    batch_size: int = 256
    lr: float | None = None  # None: DEFAULT_LR_SCRATCH, or DEFAULT_LR_FINETUNE with a base
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: 5% of all steps
    grad_clip: float = 1.0
    workers: int = 0
    max_pairs: int | None = None
    val_fraction: float = 0.1
    patience: int = 3  # epochs without a better held-out recall before stopping; 0: never stop
    early_stop_k: int = 1  # which text->image recall@K decides "better"
    seed: int = 0
    device: str = "auto"
    image_augment: ImageAugment = ImageAugment.NONE
    lock_image: bool = False
    lock_text: bool = False
    resume: bool = False
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class StepStatus:
    epoch: int
    epochs: int
    step: int  # steps done, over the whole run
    loss: float  # running mean over the epoch so far
    pairs_per_s: float
    lr: float


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: int
    epochs: int
    loss: float
    pairs_per_s: float
    metrics: Mapping[str, float]  # empty without a held-out split
    improved: bool  # model.pt was written from this epoch


class TrainProgress(Protocol):
    """What a training run tells its caller while it runs."""

    def begin(self, phase: str, total: int, done: int = 0) -> None: ...

    def advance(self, done: int, status: StepStatus | None = None) -> None: ...

    def epoch_done(self, report: EpochReport) -> None: ...

    def note(self, message: str) -> None: ...


class _Silent:
    def begin(self, phase: str, total: int, done: int = 0) -> None:
        pass

    def advance(self, done: int, status: StepStatus | None = None) -> None:
        pass

    def epoch_done(self, report: EpochReport) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a run produced; ``metrics`` are the held-out figures of the saved model."""

    out_dir: Path
    checkpoint: Path
    model_name: str
    metrics: dict[str, float]
    epochs: int  # epochs trained in total (resumed runs included)
    seconds: float  # wall time in total, reading images included (resumed runs included)
    steps: int
    best_epoch: int  # the epoch model.pt comes from
    stopped_early: bool
    device: str
    pairs_per_s: float  # training steps only, this session
    train_images: int
    train_pairs: int
    held_out_images: int
    held_out_captions: int
    skipped: int
    skipped_examples: tuple[str, ...]
    probe_texts: tuple[str, ...]  # a few captions and their vectors from the saved model
    probe_vectors: FloatMatrix = field(compare=False, repr=False)

    def settings_lines(self) -> tuple[str, str]:
        """The two settings that make the service and ingestion use this model."""
        return (
            f"MMRAG_CLIP__CHECKPOINT={self.checkpoint.resolve()}",
            f"MMRAG_CLIP__MODEL={self.model_name}",
        )


# ---------------------------------------------------------------------------------------------
# Pairs: reading folders and pairs files (no torch)


@dataclass(slots=True)
class Skipped:
    """Rows and images left out: how many, and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(reason)


@dataclass(slots=True)
class PairSet:
    """Images with their captions; ``held_out`` per image comes from a split column."""

    source: Path
    images: list[Path] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    held_out: list[bool | None] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)
    _index: dict[Path, int] = field(default_factory=dict, repr=False)

    @property
    def pairs(self) -> int:
        return sum(len(c) for c in self.captions)

    def add(self, image: Path, captions: Iterable[str], held_out: bool | None) -> None:
        key = Path(os.path.normpath(image))
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.images)
            self.images.append(key)
            self.captions.append([])
            self.held_out.append(held_out)
        elif self.held_out[i] is None:
            self.held_out[i] = held_out
        known = set(self.captions[i])
        self.captions[i].extend(c for c in captions if c not in known)


def caption_key(text: str) -> str:
    """Captions that are the same text for retrieval: case and spacing aside."""
    return " ".join(text.split()).casefold()


def _captions(value: object) -> list[str]:
    if isinstance(value, str):
        lines = value.splitlines()
    elif isinstance(value, list):
        lines = [str(v) for v in value if isinstance(v, str | int | float)]
    else:
        return []
    return list(dict.fromkeys(" ".join(line.split()) for line in lines if line.strip()))


def _first(row: Mapping[str, object], keys: Sequence[str]) -> object:
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


class _BadRowError(ValueError):
    pass


def _parse_row(row: Mapping[str, object]) -> tuple[str, list[str], bool | None]:
    """(image as written, captions, held out?) of one manifest or pairs-file row."""
    name = _first(row, _IMAGE_KEYS)
    if not isinstance(name, str) or not name.strip():
        raise _BadRowError(f"no image ({' / '.join(_IMAGE_KEYS)})")
    captions = _captions(_first(row, _CAPTION_KEYS))
    if not captions:
        raise _BadRowError(f"{name}: no caption ({' / '.join(_CAPTION_KEYS)})")
    split = row.get("split")
    held_out: bool | None = None
    if isinstance(split, str) and split.strip():
        value = split.strip().lower()
        if value in _HELD_OUT_SPLITS:
            held_out = True
        elif value in _TRAIN_SPLITS:
            held_out = False
        else:
            msg = f"{name}: unknown split {split!r} (train, or val / test)"
            raise _BadRowError(msg)
    return name.strip(), captions, held_out


def _rows(path: Path, skipped: Skipped) -> Iterator[tuple[str, Mapping[str, object]]]:
    """(where, row) for each row of a CSV or JSONL file; unparsable lines go to ``skipped``."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {(c or "").strip().lower() for c in reader.fieldnames or ()}
            if not columns & set(_IMAGE_KEYS) or not columns & set(_CAPTION_KEYS):
                msg = (
                    f"{path}: the header needs an image column ({', '.join(_IMAGE_KEYS)}) and a "
                    f"caption column ({', '.join(_CAPTION_KEYS)}); found: {sorted(columns)}"
                )
                raise InputError(msg)
            for row in reader:
                yield (
                    f"{path.name}:{reader.line_num}",
                    {k.strip().lower(): v for k, v in row.items() if isinstance(k, str)},
                )
        return
    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.add(f"{path.name}:{n}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                skipped.add(f"{path.name}:{n}: not a JSON object")
                continue
            yield f"{path.name}:{n}", {str(k).strip().lower(): v for k, v in row.items()}


def _read_pairs_file(path: Path, pairs: PairSet) -> None:
    base = path.parent
    try:
        for where, row in _rows(path, pairs.skipped):
            try:
                name, captions, held_out = _parse_row(row)
            except _BadRowError as exc:
                pairs.skipped.add(f"{where}: {exc}")
                continue
            image = Path(name).expanduser()
            pairs.add(image if image.is_absolute() else base / image, captions, held_out)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        msg = f"pairs file {path} is unreadable: {exc}"
        raise InputError(msg) from exc


_Manifests = dict[Path, tuple[str, list[str], bool | None]]  # image -> (row, captions, split)


def _read_manifests(folders: Iterable[Path], pairs: PairSet) -> _Manifests:
    """Every caption row of the folders' captions.csv / captions.jsonl, by image."""
    manifests: _Manifests = {}
    for folder in folders:
        for name in MANIFEST_NAMES:
            manifest = folder / name
            if not manifest.is_file():
                continue
            try:
                for where, row in _rows(manifest, pairs.skipped):
                    try:
                        file, captions, held_out = _parse_row(row)
                    except _BadRowError as exc:
                        pairs.skipped.add(f"{folder.name}/{where}: {exc}")
                        continue
                    # As ingestion reads manifests: by file name, in the manifest's folder.
                    key = folder / Path(file).name
                    _, known, split = manifests.get(key, (where, [], None))
                    manifests[key] = (
                        where,
                        [*known, *captions],
                        held_out if split is None else split,
                    )
            except (OSError, UnicodeDecodeError, csv.Error, InputError) as exc:
                pairs.skipped.add(f"{manifest}: unreadable ({exc})")
    return manifests


def _read_folder(root: Path, pairs: PairSet) -> None:
    found = discover([root])
    for refused in found.refused:
        pairs.skipped.add(f"{refused.path}: {refused.reason}")
    images = [f.path for f in found.files if f.modality is Modality.IMAGE]
    manifests = _read_manifests(sorted({p.parent for p in images}), pairs)
    seen: set[Path] = set()
    for image in images:
        where, captions, held_out = manifests.get(image, ("", [], None))
        seen.add(image)
        sidecar = image.with_name(image.name + SIDECAR_SUFFIX)
        if sidecar.is_file():
            try:
                captions = [*captions, *_captions(sidecar.read_text(encoding="utf-8-sig"))]
            except (OSError, UnicodeDecodeError) as exc:
                pairs.skipped.add(f"{sidecar}: unreadable ({exc})")
        if captions:
            pairs.add(image, captions, held_out)
        else:
            pairs.skipped.add(f"{image.relative_to(root)}: no caption")
    for image, (where, _, _) in manifests.items():
        if image not in seen:
            pairs.skipped.add(f"{image.parent.name}/{where}: image {image.name} not found")


def read_pairs(path: Path) -> PairSet:
    """Every (image, captions) pair under a folder or in a CSV / JSONL pairs file."""
    path = path.expanduser()
    pairs = PairSet(source=path)
    if path.is_dir():
        _read_folder(path.resolve(), pairs)
    elif path.is_file() and path.suffix.lower() in {".csv", ".jsonl", ".ndjson"}:
        _read_pairs_file(path, pairs)
    elif path.exists():
        msg = f"{path}: pairs must be a folder, a .csv or a .jsonl file"
        raise InputError(msg)
    else:
        msg = f"pairs path {path} does not exist"
        raise InputError(msg)
    if not pairs.images:
        examples = "; ".join(pairs.skipped.examples)
        msg = f"no usable image-caption pairs in {path}" + (f" ({examples})" if examples else "")
        raise InputError(msg)
    return pairs


def cap_pairs(pairs: PairSet, max_pairs: int, seed: int) -> PairSet:
    """A random (seeded) subset of whole images holding at most ``max_pairs`` captions."""
    if pairs.pairs <= max_pairs:
        return pairs
    order = list(range(len(pairs.images)))
    random.Random(seed).shuffle(order)
    capped = PairSet(source=pairs.source, skipped=pairs.skipped)
    left = max_pairs
    for i in sorted(order[: _images_for(pairs, order, max_pairs)]):
        captions = pairs.captions[i][:left]
        capped.add(pairs.images[i], captions, pairs.held_out[i])
        left -= len(captions)
    return capped


def _images_for(pairs: PairSet, order: list[int], max_pairs: int) -> int:
    total = 0
    for n, i in enumerate(order, 1):
        total += len(pairs.captions[i])
        if total >= max_pairs:
            return n
    return len(order)


def split_images(
    held_out: Sequence[bool | None], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, held-out) image indices: from the split column when there is one, else a seeded
    ``val_fraction`` of the images (so every caption of an image lands on the same side)."""
    n = len(held_out)
    if any(h is not None for h in held_out):
        return [i for i in range(n) if not held_out[i]], [i for i in range(n) if held_out[i]]
    if val_fraction <= 0 or n < 3:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 2, max(1, round(n * val_fraction)))
    return sorted(order[k:]), sorted(order[:k])


# ---------------------------------------------------------------------------------------------
# Model: which architecture, which weights


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    cfg: dict[str, Any]
    weights: str | None  # what open_clip gets as ``pretrained``; None: from scratch
    base: str  # where the weights came from, for the card
    preprocess: dict[str, Any]  # create_model_and_transforms overrides (image_mean, ...)


def _arch(arch: str) -> tuple[str, dict[str, Any]]:
    import open_clip

    cfg = builtin_config(arch)
    if cfg is not None:
        return arch, cfg
    path = Path(arch).expanduser()
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"--arch {arch}: cannot read the model config ({exc})"
            raise ConfigurationError(msg) from exc
        if isinstance(data, dict) and isinstance(data.get("model_cfg"), dict):
            name = data.get("model_name")
            data = data["model_cfg"]  # open_clip's hub format
            stem = name if isinstance(name, str) else path.stem
        else:
            stem = path.stem
        if not isinstance(data, dict) or not all(
            k in data for k in ("embed_dim", "vision_cfg", "text_cfg")
        ):
            msg = f"--arch {arch}: not an open_clip model config (embed_dim, vision_cfg, text_cfg)"
            raise ConfigurationError(msg)
        known = open_clip.get_model_config(stem)
        if known is not None and known != data:
            msg = (
                f"--arch {arch}: {stem!r} is already an open_clip model with another "
                "architecture; rename the file"
            )
            raise ConfigurationError(msg)
        return stem, data
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        msg = (
            f"--arch {arch!r} is not a built-in ({', '.join(BUILTIN_CONFIGS)}), an open_clip "
            "model name (ViT-B-32, RN50, ...) or a model-config JSON file"
        )
        raise ConfigurationError(msg)
    return arch, cfg


def _checkpoint_in(folder: Path) -> Path:
    for name in _CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    msg = f"--from {folder}: no checkpoint in it (looked for {', '.join(_CHECKPOINT_NAMES)})"
    raise ConfigurationError(msg)


def _from_checkpoint(path: Path, arch: str | None) -> ModelSpec:
    checkpoint = _checkpoint_in(path) if path.is_dir() else path
    beside = read_checkpoint_config(checkpoint)
    if arch is not None:
        name, cfg = _arch(arch)
        preprocess = {}
    elif beside is not None:
        name, cfg = beside.model_name, beside.model_cfg
        preprocess = _preprocess_overrides(beside.preprocess_cfg)
    else:
        msg = (
            f"--from {path}: no {CHECKPOINT_CONFIG_NAME} beside it says which architecture "
            "it is; name it with --arch (e.g. --arch ViT-B-32)"
        )
        raise ConfigurationError(msg)
    return ModelSpec(name, cfg, str(checkpoint), str(checkpoint.resolve()), preprocess)


def _from_tag(value: str) -> ModelSpec:
    import open_clip

    arch, tag = value.split(":", 1)
    if arch not in open_clip.list_models():
        msg = f"--from {value}: {arch!r} is not an open_clip model (ViT-B-32, RN50, ...)"
        raise ConfigurationError(msg)
    try:
        weights = pretrained_weights(arch, tag, probe_timeout_s=3.0)
    except ModelUnavailableError as exc:
        msg = (
            f"--from {value}: these pretrained weights are not in the local cache and the model "
            f"hub ({hub_endpoint()}) cannot be reached. Download them where it can be and pass "
            f"the file: --from FILE --arch {arch}; or train from scratch: --arch {DEFAULT_ARCH}"
        )
        raise ModelUnavailableError(msg) from exc
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag)
    cfg = open_clip.get_model_config(arch)
    return ModelSpec(arch, cfg, weights, value, _preprocess_overrides(pretrained_cfg))


def _preprocess_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    keys = {"mean": "image_mean", "std": "image_std"}
    keys |= {"interpolation": "image_interpolation", "resize_mode": "image_resize_mode"}
    return {arg: cfg[key] for key, arg in keys.items() if cfg.get(key) is not None}


def resolve_model(options: TrainOptions) -> ModelSpec:
    """The architecture and starting weights ``--from`` / ``--arch`` ask for."""
    if options.base is None:
        name, cfg = _arch(options.arch or DEFAULT_ARCH)
        return ModelSpec(name, cfg, None, f"scratch ({name})", {})
    path = Path(options.base).expanduser()
    if path.exists():
        return _from_checkpoint(path, options.arch)
    if ":" in options.base:
        if options.arch is not None:
            msg = "--arch goes with --from CHECKPOINT_FILE; a pretrained tag names its own"
            raise ConfigurationError(msg)
        return _from_tag(options.base)
    msg = (
        f"--from {options.base}: neither a checkpoint file or folder nor ARCH:TAG "
        "(e.g. ViT-B-32:laion2b_s34b_b79k)"
    )
    raise ConfigurationError(msg)


class _QuietRandomInit(logging.Filter):
    """open_clip warns that a model built from scratch has no pretrained weights: on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _build(spec: ModelSpec, device: str) -> tuple[Any, Any, Any]:
    """(model, inference transform, tokenizer) from open_clip."""
    import open_clip

    register_model_config(spec.name, spec.cfg)
    quiet = _QuietRandomInit()
    logging.getLogger().addFilter(quiet)
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.weights, device=device, **spec.preprocess
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        msg = f"could not build {spec.name} from {spec.base}: {str(exc)[:300]}"
        raise ModelUnavailableError(msg) from exc
    finally:
        logging.getLogger().removeFilter(quiet)
    return model, transform, open_clip.get_tokenizer(spec.name)


# ---------------------------------------------------------------------------------------------
# Images: decoded once, resized and cropped the way open_clip's inference transform does


@dataclass(slots=True)
class _Pixels:
    """open_clip's inference transform split in two: PIL resize/crop (once per image) and
    ToTensor + Normalize (per batch, on the device)."""

    resize: Callable[[Image.Image], Image.Image]
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def load(self, path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # first, as the embedder does
        array = np.asarray(self.resize(rgb), dtype=np.uint8)
        if array.shape != (*self.size, 3):
            msg = f"preprocessed to {array.shape}, expected {(*self.size, 3)}"
            raise ValueError(msg)
        return array

    def safe_load(self, path: Path) -> np.ndarray[Any, np.dtype[np.uint8]] | str:
        """Pixels, or why the image cannot be read."""
        try:
            return self.load(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return f"{path}: unreadable image ({exc.__class__.__name__}: {exc})"


def _pixels_for(transform: Any) -> _Pixels:
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = list(getattr(transform, "transforms", ()))
    if len(steps) < 3 or not (isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize)):
        msg = f"unexpected open_clip preprocessing {transform}; expected ... ToTensor, Normalize"
        raise ConfigurationError(msg)
    probe = Compose(steps[:-2])(Image.new("RGB", (8, 8)))
    return _Pixels(
        resize=Compose(steps[:-2]),
        size=(probe.height, probe.width),
        mean=tuple(float(m) for m in steps[-1].mean),
        std=tuple(float(s) for s in steps[-1].std),
    )


class _Images:
    """Images by index: from memory when they fit, else read per batch (``workers`` processes)."""

    def __init__(self, paths: Sequence[Path], pixels: _Pixels, workers: int) -> None:
        self.paths = list(paths)
        self.pixels = pixels
        self.workers = workers
        self.cache: np.ndarray[Any, np.dtype[np.uint8]] | None = None
        self.bad: dict[int, str] = {}

    def prepare(self, progress: TrainProgress) -> None:
        """Decodes every image once: unreadable ones are found now, the rest kept if they fit."""
        h, w = self.pixels.size
        keep = len(self.paths) * h * w * 3 <= _CACHE_LIMIT_BYTES
        if keep:
            self.cache = np.zeros((len(self.paths), h, w, 3), dtype=np.uint8)
        progress.begin("reading images", len(self.paths))
        threads = max(2, min(8, os.cpu_count() or 2))
        with ThreadPoolExecutor(threads) as pool:
            for i, got in enumerate(pool.map(self.pixels.safe_load, self.paths, chunksize=64)):
                if isinstance(got, str):
                    self.bad[i] = got
                elif self.cache is not None:
                    self.cache[i] = got
                if i % 256 == 255:
                    progress.advance(256)
        progress.advance(len(self.paths) % 256)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray[Any, np.dtype[np.uint8]] | str:
        if self.cache is not None:
            row: np.ndarray[Any, np.dtype[np.uint8]] = self.cache[i]
            return row
        return self.pixels.safe_load(self.paths[i])

    def batches(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, list[int]]]:
        """(uint8 NHWC pixels, positions in the batch that loaded) for each batch of image
        indices, in order (a batch where nothing loaded gives an empty one)."""
        import torch

        if self.cache is not None:
            cache = torch.from_numpy(self.cache)
            for batch in batches:
                yield cache[torch.tensor(batch)], list(range(len(batch)))
            return
        loader: Iterable[list[np.ndarray[Any, np.dtype[np.uint8]] | str]]
        loader = torch.utils.data.DataLoader(
            self,  # type: ignore[arg-type]  # a map-style dataset needs only __getitem__/__len__
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=list,
        )
        for batch, items in zip(batches, loader, strict=True):
            ok = [j for j, got in enumerate(items) if not isinstance(got, str)]
            for j, got in enumerate(items):
                if isinstance(got, str) and batch[j] not in self.bad:
                    self.bad[batch[j]] = got
            if not ok:
                yield torch.zeros((0, *self.pixels.size, 3), dtype=torch.uint8), ok
                continue
            yield torch.from_numpy(np.stack([items[j] for j in ok])), ok


def _to_input(
    pixels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: torch.Generator | None,
) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (ToTensor + Normalize), optionally augmented."""
    x = pixels.permute(0, 3, 1, 2).float().div_(255)
    if augment is not None:
        x = _augment(x, augment)
    return (x - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light augmentation, vectorised: a random crop (zoom 1-1.15x, shift) and a flip."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - torch's own convention

    n = x.shape[0]
    rand = torch.rand(n, 4, generator=gen).to(x.device)
    scale = 1 / (1 + 0.15 * rand[:, 0])
    flip = torch.where(rand[:, 1] < 0.5, -1.0, 1.0)
    shift = (1 - scale)[:, None] * (rand[:, 2:] * 2 - 1)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Held-out evaluation


@dataclass(frozen=True, slots=True)
class HeldOut:
    """Held-out images and the distinct caption texts among their captions.

    ``text_images[t]``: the images one of whose captions is text ``t`` (its relevant images);
    ``text_counts[t]``: how many held-out captions ``t`` stands for (each is one query)."""

    images: list[int]  # indices into the pair set
    texts: list[str]
    text_images: list[list[int]]  # positions in ``images``
    text_counts: list[int]
    image_texts: list[set[int]]

    @classmethod
    def build(cls, images: Sequence[int], captions: Sequence[Sequence[str]]) -> HeldOut:
        keys: dict[str, int] = {}
        texts: list[str] = []
        text_images: list[list[int]] = []
        counts: list[int] = []
        image_texts: list[set[int]] = []
        for pos, i in enumerate(images):
            mine: set[int] = set()
            for caption in captions[i]:
                t = keys.setdefault(caption_key(caption), len(texts))
                if t == len(texts):
                    texts.append(caption)
                    text_images.append([])
                    counts.append(0)
                counts[t] += 1
                if t not in mine:
                    text_images[t].append(pos)
                    mine.add(t)
            image_texts.append(mine)
        return cls(list(images), texts, text_images, counts, image_texts)

    @property
    def captions(self) -> int:
        return sum(self.text_counts)


def recall_metrics(
    image_vecs: torch.Tensor, text_vecs: torch.Tensor, held_out: HeldOut
) -> dict[str, float]:
    """Text->image recall@1/5/10 (a hit: any image sharing the caption's text in the top K),
    its chance level at K=1 and precision@10 (the share of the top 10 that are relevant: what
    tells models apart when many images share a caption), and image->text recall@1 over the
    distinct caption texts (for label captions: classification accuracy)."""
    import torch

    n = image_vecs.shape[0]
    kmax = min(max(RECALL_KS), n)
    hits = dict.fromkeys(RECALL_KS, 0.0)
    precision = 0.0
    counts = torch.tensor(held_out.text_counts, dtype=torch.float64)
    chunk = 512
    for start in range(0, len(held_out.texts), chunk):
        sims = text_vecs[start : start + chunk] @ image_vecs.T
        top = sims.topk(kmax, dim=1).indices
        relevant = torch.zeros(sims.shape, dtype=torch.bool)
        for row, images in enumerate(held_out.text_images[start : start + chunk]):
            relevant[row, images] = True
        found = relevant.gather(1, top.cpu())
        weight = counts[start : start + sims.shape[0]]
        for k in RECALL_KS:
            hits[k] += float((found[:, :k].any(dim=1).double() * weight).sum())
        precision += float((found.double().mean(dim=1) * weight).sum())
    total = float(counts.sum())
    chance = sum(
        len(imgs) / n * c
        for imgs, c in zip(held_out.text_images, held_out.text_counts, strict=True)
    )
    i2t = 0
    for start in range(0, n, chunk):
        best = (image_vecs[start : start + chunk] @ text_vecs.T).argmax(dim=1).tolist()
        i2t += sum(t in held_out.image_texts[start + j] for j, t in enumerate(best))
    metrics = {f"t2i_r{k}": hits[k] / total for k in RECALL_KS}
    metrics["t2i_r1_chance"] = chance / total
    metrics["t2i_p10"] = precision / total
    metrics["i2t_r1"] = i2t / n
    return metrics


def _encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], device: str) -> torch.Tensor:
    import torch

    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 512):
            tokens = tokenizer(list(texts[start : start + 512])).to(device)
            rows.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(rows) if rows else torch.zeros(0)


def _encode_images(
    model: Any,
    images: _Images,
    indices: Sequence[int],
    norm: tuple[torch.Tensor, torch.Tensor],
    device: str,
) -> tuple[torch.Tensor, list[int]]:
    """Vectors of the images that load, and the positions in ``indices`` that did."""
    import torch

    batches = [list(indices[s : s + 512]) for s in range(0, len(indices), 512)]
    rows: list[torch.Tensor] = []
    kept: list[int] = []
    with torch.inference_mode():
        for b, (pixels, ok) in enumerate(images.batches(batches)):
            x = _to_input(pixels.to(device), *norm, None)
            rows.append(model.encode_image(x, normalize=True).float())
            kept.extend(b * 512 + j for j in ok)
    return (torch.cat(rows) if rows else torch.zeros(0)), kept


# ---------------------------------------------------------------------------------------------
# Training


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms and the temperature."""
    decay: list[Any] = []
    plain: list[Any] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or any(s in name for s in ("bias", "ln", "bn", "logit_scale"))
        (plain if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate, then a cosine down to zero at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _check(options: TrainOptions) -> None:
    rules = (
        (options.epochs >= 1, "--epochs must be at least 1"),
        (options.batch_size >= 2, "--batch-size must be at least 2 (contrastive loss)"),
        (options.lr is None or options.lr > 0, "--lr must be positive"),
        (0 <= options.val_fraction < 1, "--val-fraction must be in [0, 1)"),
        (
            min(options.patience, options.workers, options.weight_decay) >= 0,
            "--patience, --workers and --weight-decay cannot be negative",
        ),
        (options.grad_clip > 0, "--grad-clip must be positive"),
        (options.warmup_steps is None or options.warmup_steps >= 0, "--warmup-steps < 0"),
        (options.max_pairs is None or options.max_pairs >= 2, "--max-pairs must be at least 2"),
        (options.early_stop_k in RECALL_KS, f"--early-stop-k must be one of {RECALL_KS}"),
        (bool(_DEVICE.fullmatch(options.device)), "--device must be auto, cpu or cuda[:N]"),
        (
            options.base is not None or not (options.lock_image or options.lock_text),
            "--lock-image / --lock-text need --from (a trained tower to keep)",
        ),
        (
            not (options.lock_image and options.lock_text),
            "--lock-image and --lock-text together leave nothing to train",
        ),
    )
    if problems := [message for ok, message in rules if not ok]:
        raise InputError("; ".join(problems))


def _device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        msg = f"--device {wanted}: torch sees no CUDA device here; use --device cpu or auto"
        raise ConfigurationError(msg)
    return wanted


def _save(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file: a crash never leaves half a checkpoint."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _data_fingerprint(pairs: PairSet, options: TrainOptions) -> str:
    digest = hashlib.sha256()
    for image, captions in zip(pairs.images, pairs.captions, strict=True):
        digest.update("\0".join([str(image), *captions, "\n"]).encode())
    digest.update(f"{options.val_fraction}:{options.seed}".encode())
    return digest.hexdigest()[:16]


@dataclass(slots=True)
class _RunState:
    """What ``last.pt`` keeps beside the model, optimizer and scheduler."""

    epoch: int = 0  # epochs completed
    step: int = 0
    best: list[float] = field(default_factory=list)  # the best epoch's _score
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    probe: list[list[float]] = field(default_factory=list)
    bad_epochs: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def _score(metrics: Mapping[str, float], k: int) -> list[float]:
    """What "better" means: text->image recall@K, ties broken by the figures that still move
    when recall saturates (many images per caption)."""
    keys = (f"t2i_r{k}", "t2i_p10", "i2t_r1", "t2i_r5", "t2i_r10")
    return [metrics[key] for key in keys if key in metrics]


def _resume_state(options: TrainOptions) -> dict[str, Any] | None:
    """The state to continue from (``--resume``); refuses to overwrite a run by accident."""
    import torch

    out = options.out.expanduser()
    last = out / RESUME_FILE
    if not options.resume:
        if not options.overwrite and any((out / n).exists() for n in (RESUME_FILE, MODEL_FILE)):
            msg = (
                f"{out} already holds a trained model; --resume continues it, --overwrite "
                "starts over, or choose another --out"
            )
            raise ConfigurationError(msg)
        return None
    if not last.is_file():
        msg = f"--resume: {last} does not exist; start the run without --resume"
        raise ConfigurationError(msg)
    try:
        saved = torch.load(last, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        msg = f"--resume: {last} is unreadable ({exc}); start over with --overwrite"
        raise ConfigurationError(msg) from exc
    if not isinstance(saved, dict) or saved.get("format") != _STATE_FORMAT:
        msg = f"--resume: {last} is not a resume state this version writes"
        raise ConfigurationError(msg)
    if options.arch is not None and _arch(options.arch)[0] != saved["model_name"]:
        msg = f"--resume: {last} trains {saved['model_name']}, not {options.arch}"
        raise ConfigurationError(msg)
    return saved


@dataclass(slots=True)
class _Data:
    """The pairs split into training pairs and held-out images, captions tokenised once."""

    pairs: PairSet
    images: _Images
    train_images: list[int]
    train_pairs: list[tuple[int, str]]
    held_out: HeldOut
    texts: list[str]  # distinct training captions
    tokens: torch.Tensor  # per distinct caption
    pair_images: torch.Tensor  # per training pair: its image index
    pair_texts: torch.Tensor  # per training pair: its caption's row in ``tokens``


def _data(
    pairs: PairSet, pixels: _Pixels, tokenizer: Any, options: TrainOptions, report: TrainProgress
) -> _Data:
    import torch

    images = _Images(pairs.images, pixels, options.workers)
    started = time.perf_counter()
    images.prepare(report)
    where = "kept in memory" if images.cache is not None else "read again per batch"
    report.note(
        f"read {len(images)} images in {time.perf_counter() - started:.1f} s ({where}); "
        f"{len(images.bad)} unreadable"
    )
    for reason in images.bad.values():
        pairs.skipped.add(reason)
    usable = [i for i in range(len(pairs.images)) if i not in images.bad]
    train_pos, held_pos = split_images(
        [pairs.held_out[i] for i in usable], options.val_fraction, options.seed
    )
    train_images = [usable[p] for p in train_pos]
    train_pairs = [(i, c) for i in train_images for c in pairs.captions[i]]
    if len(train_pairs) < 2:
        msg = f"{len(train_pairs)} usable training pair(s) in {options.pairs}; at least 2 needed"
        raise InputError(msg)
    texts = list(dict.fromkeys(c for _, c in train_pairs))
    row = {t: n for n, t in enumerate(texts)}
    return _Data(
        pairs=pairs,
        images=images,
        train_images=train_images,
        train_pairs=train_pairs,
        held_out=HeldOut.build([usable[p] for p in held_pos], pairs.captions),
        texts=texts,
        tokens=tokenizer(texts),
        pair_images=torch.tensor([i for i, _ in train_pairs]),
        pair_texts=torch.tensor([row[c] for _, c in train_pairs]),
    )


class _Trainer:
    """One session of a run: the model, its optimiser, schedule and state, epoch by epoch."""

    def __init__(
        self,
        options: TrainOptions,
        spec: ModelSpec,
        built: tuple[Any, Any, Any],
        data: _Data,
        *,
        device: str,
        fingerprint: str,
        saved: dict[str, Any] | None,
        started: float,
        locked: tuple[bool, bool],
    ) -> None:
        import open_clip
        import torch

        self.options, self.spec, self.data, self.device = options, spec, data, device
        self.locked = locked  # (image tower, text tower) frozen
        self.model, transform, self.tokenizer = built
        self.fingerprint = fingerprint
        pixels = _pixels_for(transform)
        self.mean = torch.tensor(pixels.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(pixels.std, device=device).view(1, -1, 1, 1)
        self.preprocess_cfg = (
            saved["preprocess_cfg"] if saved else dict(self.model.visual.preprocess_cfg)
        )
        self.batch_size = min(options.batch_size, len(data.train_pairs))
        self.steps_per_epoch = len(data.train_pairs) // self.batch_size
        total = self.steps_per_epoch * options.epochs
        self.warmup = (
            options.warmup_steps if options.warmup_steps is not None else max(1, total // 20)
        )
        self.lr = options.lr or (DEFAULT_LR_FINETUNE if spec.weights else DEFAULT_LR_SCRATCH)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, options.weight_decay), lr=self.lr
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(self.warmup, total)
        )
        self.amp_dtype: torch.dtype | None = None
        if device.startswith("cuda"):
            bf16 = torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.loss_fn = open_clip.ClipLoss()
        self.state = _RunState()
        self.probe_texts = (data.held_out.texts or data.texts)[:8]
        self.session_pairs, self.session_s = 0, 0.0
        self.reported_bad = set(data.images.bad)
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            self.state = _RunState(**saved["run"])
            torch.set_rng_state(saved["rng"]["torch"])
            if device.startswith("cuda") and saved["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state_all(list(saved["rng"]["cuda"]))
        self.seconds_before = self.state.seconds
        self.started = started  # this session's start: reading the images counts too

    def describe(self) -> str:
        data, held = self.data, self.data.held_out
        skipped = data.pairs.skipped.count
        return (
            f"{self.spec.name} from {self.spec.base} on {self.device}: "
            f"{len(data.train_images)} images / {len(data.train_pairs)} pairs to train on, "
            f"{len(held.images)} images / {held.captions} captions held out"
            + (f", {skipped} skipped" if skipped else "")
            + f"; batch {self.batch_size}, {self.steps_per_epoch} steps an epoch, "
            f"lr {self.lr:g}, warm-up {self.warmup} steps"
        )

    def train_epoch(self, epoch: int, report: TrainProgress) -> tuple[float, float]:
        """Trains one epoch; (mean loss, pairs/s)."""
        import torch

        self.model.train()
        options, data = self.options, self.data
        seed = options.seed * 100_003 + epoch  # the epoch's order does not depend on RNG state
        order = torch.randperm(len(data.train_pairs), generator=torch.Generator().manual_seed(seed))
        batches = order[: self.steps_per_epoch * self.batch_size].view(-1, self.batch_size)
        aug = None
        if options.image_augment is ImageAugment.LIGHT:
            aug = torch.Generator().manual_seed(seed + 1)
        losses: list[float] = []
        started, pairs = time.perf_counter(), 0
        tick = started  # throughput counts reading the batch, not evaluating
        image_batches = [data.pair_images[b].tolist() for b in batches]
        for b, (raw, ok) in enumerate(data.images.batches(image_batches)):
            if len(ok) < 2:
                continue
            text = data.tokens[data.pair_texts[batches[b][ok]]].to(self.device)
            losses.append(self._step(raw, text, aug))
            pairs += len(ok)
            self.session_pairs += len(ok)
            now = time.perf_counter()
            self.session_s += now - tick
            tick = now
            report.advance(
                1,
                StepStatus(
                    epoch=epoch,
                    epochs=options.epochs,
                    step=self.state.step,
                    loss=sum(losses) / len(losses),
                    pairs_per_s=self.session_pairs / max(self.session_s, 1e-9),
                    lr=float(self.scheduler.get_last_lr()[0]),
                ),
            )
        for i in set(data.images.bad) - self.reported_bad:  # unreadable since first read
            data.pairs.skipped.add(data.images.bad[i])
            self.reported_bad.add(i)
        loss = sum(losses) / len(losses) if losses else math.nan
        return loss, pairs / max(time.perf_counter() - started, 1e-9)

    def _step(self, raw: torch.Tensor, text: torch.Tensor, aug: torch.Generator | None) -> float:
        import torch

        x = _to_input(raw.to(self.device), self.mean, self.std, aug)
        with torch.autocast(
            device_type="cuda" if self.amp_dtype else "cpu",
            dtype=self.amp_dtype,
            enabled=self.amp_dtype is not None,
        ):
            image_features = self.model.encode_image(x, normalize=True)
            text_features = self.model.encode_text(text, normalize=True)
            loss = self.loss_fn(image_features, text_features, self.model.logit_scale.exp())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, _LOG_SCALE_MAX)
        self.state.step += 1
        return float(loss.detach())

    def evaluate(self) -> dict[str, float]:
        """Held-out recall of the model as it is now; {} without a held-out split."""
        held_out = self.data.held_out
        if not held_out.images:
            return {}
        self.model.eval()
        image_vecs, kept = _encode_images(
            self.model, self.data.images, held_out.images, (self.mean, self.std), self.device
        )
        if not kept:
            return {}
        if len(kept) < len(held_out.images):  # an image went unreadable since it was first read
            held_out = HeldOut.build([held_out.images[k] for k in kept], self.data.pairs.captions)
        text_vecs = _encode_texts(self.model, self.tokenizer, held_out.texts, self.device)
        return recall_metrics(image_vecs.cpu(), text_vecs.cpu(), held_out)

    def end_epoch(self, epoch: int, loss: float, metrics: dict[str, float]) -> bool:
        """Records the epoch, writes model.pt when it is the best so far, and last.pt; whether
        model.pt was written."""
        state, out = self.state, self.options.out.expanduser()
        score = _score(metrics, self.options.early_stop_k)
        improved = not metrics or score > state.best
        state.epoch = epoch
        state.seconds = self.seconds_before + time.perf_counter() - self.started
        state.history.append({"epoch": epoch, "loss": loss, **metrics})
        if improved:
            state.best, state.best_epoch, state.best_metrics = score, epoch, metrics
            state.bad_epochs = 0
            self.model.eval()
            probe = _encode_texts(self.model, self.tokenizer, self.probe_texts, self.device)
            state.probe = probe.cpu().tolist()
            _save(self.model.state_dict(), out / MODEL_FILE)
        else:
            state.bad_epochs += 1
        patience = self.options.patience
        state.stopped_early = bool(metrics and patience and state.bad_epochs >= patience)
        self._save_state(out)
        _write_card(self.result(), self.options, self.spec, self)
        return improved

    def _save_state(self, out: Path) -> None:
        import torch

        cuda = self.device.startswith("cuda")
        _save(
            {
                "format": _STATE_FORMAT,
                "model_name": self.spec.name,
                "model_cfg": self.spec.cfg,
                "preprocess_cfg": self.preprocess_cfg,
                "base": self.spec.base,
                "locked": list(self.locked),
                "data": self.fingerprint,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if cuda else None,
                },
                "run": asdict(self.state),
            },
            out / RESUME_FILE,
        )

    def result(self) -> TrainResult:
        state, data = self.state, self.data
        out = self.options.out.expanduser()
        probe = np.asarray(state.probe, dtype=np.float32)
        return TrainResult(
            out_dir=out,
            checkpoint=out / MODEL_FILE,
            model_name=self.spec.name,
            metrics=dict(state.best_metrics),
            epochs=state.epoch,
            seconds=state.seconds,
            steps=state.step,
            best_epoch=state.best_epoch,
            stopped_early=state.stopped_early,
            device=self.device,
            pairs_per_s=self.session_pairs / self.session_s if self.session_s else 0.0,
            train_images=len(data.train_images),
            train_pairs=len(data.train_pairs),
            held_out_images=len(data.held_out.images),
            held_out_captions=data.held_out.captions,
            skipped=data.pairs.skipped.count,
            skipped_examples=tuple(data.pairs.skipped.examples),
            probe_texts=tuple(self.probe_texts),
            probe_vectors=probe if probe.ndim == 2 else probe.reshape(0, 0),
        )


def train(options: TrainOptions, progress: TrainProgress | None = None) -> TrainResult:
    """Trains (or fine-tunes) an open_clip model on image-caption pairs; see the module doc.

    Raises InputError (unusable options or pairs), ConfigurationError (architecture, --out,
    --resume) and ModelUnavailableError (starting weights that cannot be had)."""
    import torch

    started = time.perf_counter()
    _check(options)
    report = progress or _Silent()
    saved = _resume_state(options)
    device = _device(options.device)
    if saved is None:
        spec = resolve_model(options)
    else:
        overrides = _preprocess_overrides(saved["preprocess_cfg"])
        spec = ModelSpec(saved["model_name"], saved["model_cfg"], None, saved["base"], overrides)
    pairs = read_pairs(options.pairs)
    if options.max_pairs is not None:
        pairs = cap_pairs(pairs, options.max_pairs, options.seed)
    fingerprint = _data_fingerprint(pairs, options)
    if saved is not None and saved["data"] != fingerprint:
        msg = (
            "--resume: the pairs (or --max-pairs, --val-fraction, --seed) differ from the run "
            f"in {options.out}; use the same ones, or start over with --overwrite"
        )
        raise InputError(msg)

    torch.manual_seed(options.seed)
    built = _build(spec, device)
    # A resumed run keeps the towers it froze: the optimizer state only fits those.
    locked = (bool(saved["locked"][0]), bool(saved["locked"][1])) if saved else None
    locked = locked or (options.lock_image, options.lock_text)
    if locked[0]:
        built[0].lock_image_tower()
    if locked[1]:
        built[0].lock_text_tower()
    data = _data(pairs, _pixels_for(built[1]), built[2], options, report)
    trainer = _Trainer(
        options,
        spec,
        built,
        data,
        device=device,
        fingerprint=fingerprint,
        saved=saved,
        started=started,
        locked=locked,
    )
    out = options.out.expanduser()
    if saved is None:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (MODEL_FILE, RESUME_FILE, MODEL_CARD_NAME, CARD_MD):  # --overwrite
            (out / stale).unlink(missing_ok=True)
        config = {"model_name": spec.name, "model_cfg": spec.cfg}
        _write_json(
            out / CHECKPOINT_CONFIG_NAME, {**config, "preprocess_cfg": trainer.preprocess_cfg}
        )
    report.note(trainer.describe())
    if trainer.state.epoch:
        report.note(f"resuming after epoch {trainer.state.epoch} (step {trainer.state.step})")
    report.begin("training", trainer.steps_per_epoch * options.epochs, trainer.state.step)
    for epoch in range(trainer.state.epoch + 1, options.epochs + 1):
        if trainer.state.stopped_early:
            break
        loss, rate = trainer.train_epoch(epoch, report)
        metrics = trainer.evaluate()
        improved = trainer.end_epoch(epoch, loss, metrics)
        report.epoch_done(EpochReport(epoch, options.epochs, loss, rate, metrics, improved))
    return trainer.result()


def _write_card(
    result: TrainResult, options: TrainOptions, spec: ModelSpec, trainer: _Trainer
) -> None:
    """``model_card.json`` and ``model_card.md``, describing the model in ``model.pt``."""
    import open_clip
    import torch

    checkpoint, model = result.settings_lines()
    locked = [t for t, on in zip(("image", "text"), trainer.locked, strict=True) if on]
    card = {
        "model_name": result.model_name,
        "aligned": True,  # contrastive training on captions aligns text with images
        "checkpoint": MODEL_FILE,
        "base": spec.base,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "source": str(Path(options.pairs).expanduser().resolve()),
            "train_images": result.train_images,
            "train_pairs": result.train_pairs,
            "held_out_images": result.held_out_images,
            "held_out_captions": result.held_out_captions,
            "skipped": result.skipped,
            "skipped_examples": list(result.skipped_examples),
        },
        "training": {
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "device": result.device,
            "pairs_per_s": round(result.pairs_per_s, 1),
            "batch_size": trainer.batch_size,
            "lr": trainer.lr,
            "warmup_steps": trainer.warmup,
            "weight_decay": options.weight_decay,
            "grad_clip": options.grad_clip,
            "image_augment": str(options.image_augment),
            "locked": locked,
            "seed": options.seed,
            "val_fraction": options.val_fraction,
            "history": trainer.state.history,
        },
        "held_out_metrics": {k: round(v, 4) for k, v in result.metrics.items()},
        "usage": {
            "MMRAG_CLIP__CHECKPOINT": checkpoint.split("=", 1)[1],
            "MMRAG_CLIP__MODEL": model.split("=", 1)[1],
        },
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__},
    }
    _write_json(result.out_dir / MODEL_CARD_NAME, card)
    (result.out_dir / CARD_MD).write_text(
        _card_markdown(result, card, checkpoint, model), encoding="utf-8"
    )


def _card_markdown(result: TrainResult, card: dict[str, Any], checkpoint: str, model: str) -> str:
    metrics, training = result.metrics, card["training"]
    rows = (
        ("t2i_r1", "text to image recall@1"),
        ("t2i_r5", "text to image recall@5"),
        ("t2i_r10", "text to image recall@10"),
        ("t2i_p10", "text to image precision@10"),
        ("i2t_r1", "image to text recall@1"),
        ("t2i_r1_chance", "text to image recall@1 by chance"),
    )
    figures = "\n".join(f"| {name} | {metrics[k]:.3f} |" for k, name in rows if k in metrics)
    stopped = " (stopped early)" if result.stopped_early else ""
    return f"""# {result.model_name}, trained by `python -m ingestion train`

An open_clip model trained contrastively (CLIP loss) on image-caption pairs: its text and image
vectors are aligned, so text questions find images.

- data: `{card["data"]["source"]}`: {result.train_images} images / {result.train_pairs} pairs
  trained on, {result.held_out_images} images / {result.held_out_captions} captions held out,
  {result.skipped} skipped
- from: {card["base"]}
- training: {result.epochs} epochs, {result.steps} steps (batch {training["batch_size"]},
  lr {training["lr"]:g}), {result.seconds:.0f} s on {result.device}; these weights are from
  epoch {result.best_epoch}{stopped}

## Held-out figures

A text-to-image hit is any held-out image that has the query caption's text among its captions.

| measure | value |
|---|---|
{figures or "| (no held-out split) | |"}

## Use it

```
{checkpoint}
{model}
```

The embedder reads `{CHECKPOINT_CONFIG_NAME}` beside `{MODEL_FILE}`, so the checkpoint setting
alone is enough. With open_clip directly: register `model_cfg` from `{CHECKPOINT_CONFIG_NAME}`
as `{result.model_name}` (`app.adapters.openclip.register_model_config`), then
`open_clip.create_model_and_transforms("{result.model_name}", pretrained="{MODEL_FILE}")`.
"""


# ---------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers: Any) -> None:
    """Adds ``train`` to the ``python -m ingestion`` command line."""
    names = ", ".join(f"{n} ({d})" for n, d in DESCRIPTIONS.items())
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a CLIP model on image-caption pairs",
        description=(
            "Contrastive training of an open_clip model. PAIRS: a folder with caption sidecars "
            "or captions.csv / captions.jsonl, or a CSV / JSONL file of image,caption[,split]."
        ),
    )
    p.add_argument("pairs", type=Path, metavar="PAIRS")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--from",
        dest="base",
        metavar="CHECKPOINT|ARCH:TAG",
        help="fine-tune: a checkpoint file or folder, or an open_clip pretrained tag",
    )
    p.add_argument(
        "--arch",
        metavar="NAME|CONFIG",
        help=f"architecture: {names}, an open_clip model name, or a config JSON "
        f"(default without --from: {DEFAULT_ARCH})",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {DEFAULT_LR_SCRATCH:g}; {DEFAULT_LR_FINETUNE:g} with "
        "--from)",
    )
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, help="default: 5%% of all steps")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm limit")
    p.add_argument("--workers", type=int, default=0, help="image-reading processes")
    p.add_argument("--max-pairs", type=int, help="train on at most this many pairs")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="images held out when the data has no split column",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=3,
        help="stop after this many epochs without a better held-out recall (0: never)",
    )
    p.add_argument("--early-stop-k", type=int, default=1, choices=RECALL_KS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--image-augment",
        type=ImageAugment,
        choices=list(ImageAugment),
        default=ImageAugment.NONE,
    )
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    p.add_argument("--resume", action="store_true", help=f"continue from DIR/{RESUME_FILE}")
    p.add_argument("--overwrite", action="store_true", help="start over in a used DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from(args: argparse.Namespace) -> TrainOptions:
    """The options an argparse namespace from ``add_parser`` asks for."""
    return TrainOptions(
        pairs=args.pairs,
        out=args.out,
        base=args.base,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        workers=args.workers,
        max_pairs=args.max_pairs,
        val_fraction=args.val_fraction,
        patience=args.patience,
        early_stop_k=args.early_stop_k,
        seed=args.seed,
        device=args.device,
        image_augment=ImageAugment(args.image_augment),
        lock_image=args.lock_image,
        lock_text=args.lock_text,
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _figures(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "no held-out split"
    return (
        f"text→image R@1 {metrics['t2i_r1']:.3f}  R@5 {metrics['t2i_r5']:.3f}  "
        f"R@10 {metrics['t2i_r10']:.3f} (R@1 by chance {metrics['t2i_r1_chance']:.3f}), "
        f"P@10 {metrics['t2i_p10']:.3f}; image→text R@1 {metrics['i2t_r1']:.3f}"
    )


class _ConsoleProgress:
    """A rich progress bar with the loss and pairs/s; a line per epoch."""

    def __init__(self, console: Console, progress: Progress | None) -> None:
        self._console = console
        self._progress = progress
        self._task: TaskID | None = None

    def begin(self, phase: str, total: int, done: int = 0) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(phase, total=total, completed=done, status="")

    def advance(self, done: int, status: StepStatus | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        if status is None:
            self._progress.update(self._task, advance=done)
            return
        line = (
            f"epoch {status.epoch}/{status.epochs} loss {status.loss:.3f} "
            f"{status.pairs_per_s:.0f} pairs/s"
        )
        self._progress.update(self._task, advance=done, status=line)

    def epoch_done(self, report: EpochReport) -> None:
        mark = " (saved)" if report.improved else ""
        self._console.print(
            f"epoch {report.epoch}/{report.epochs}: loss {report.loss:.3f}, "
            f"{report.pairs_per_s:.0f} pairs/s; {_figures(report.metrics)}{mark}"
        )

    def note(self, message: str) -> None:
        self._console.print(escape(message))


def run(args: argparse.Namespace, console: Console) -> int:
    """``python -m ingestion train``: exit 0, or 1 when some pairs were skipped."""
    options = options_from(args)
    columns = (
        TextColumn("[progress.description]{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        if args.quiet:
            result = train(options, _ConsoleProgress(console, None))
        else:
            with Progress(*columns, console=console) as bar:
                result = train(options, _ConsoleProgress(console, bar))
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/yellow]: add --resume to continue from the last finished "
            f"epoch ({options.out / RESUME_FILE})"
        )
        return 130
    table = Table(title=f"Trained {result.model_name}", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("model", str(result.checkpoint))
    table.add_row(
        "training",
        f"{result.epochs} epochs, {result.steps} steps, {result.seconds:.0f} s on {result.device}"
        f" ({result.pairs_per_s:.0f} pairs/s); weights of epoch {result.best_epoch}"
        + (", stopped early" if result.stopped_early else ""),
    )
    table.add_row(
        "data",
        f"{result.train_pairs} pairs trained on; {result.held_out_images} images / "
        f"{result.held_out_captions} captions held out",
    )
    table.add_row("held out", _figures(result.metrics))
    console.print(table)
    if result.skipped:
        console.print(f"[yellow]skipped {result.skipped}[/yellow] rows or images, e.g.:")
        for reason in result.skipped_examples:
            console.print(f"  {escape(reason)}")
    console.print("use it (the embedder reads the config beside the checkpoint):")
    for line in result.settings_lines():
        console.print(f"  {line}")
    return EXIT_SOME_SKIPPED if result.skipped else EXIT_OK
