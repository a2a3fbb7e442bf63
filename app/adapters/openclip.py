"""``OpenClipEmbedder``: images and text into CLIP's joint space with open_clip.

Weights come from a pretrained tag (downloaded the normal way, or from the local cache), a
local checkpoint file, or, only when asked for, random initialisation (tests).

A checkpoint written by ``python -m ingestion train`` has an ``open_clip_config.json`` (open_clip's
hub format: model name, architecture, preprocessing) and a ``model_card.json`` beside it: the
architecture is registered with open_clip under its name and used whatever ``clip.model`` says,
so setting ``MMRAG_CLIP__CHECKPOINT`` alone is enough.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import pickle
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.adapters.fingerprints import file_sha256
from app.adapters.hub import hub_endpoint, hub_offline, hub_reachable
from app.core.errors import ConfigurationError, ModelUnavailableError
from app.core.models import EmbeddingModelInfo
from app.core.ports import FloatMatrix

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "none"
RANDOM_SEED = 0
CHECKPOINT_CONFIG_NAME = "open_clip_config.json"  # open_clip's hub format, beside the weights
MODEL_CARD_NAME = "model_card.json"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
# image_transform options open_clip's create_model_and_transforms takes as overrides
_PREPROCESS_OVERRIDES = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _file_fingerprint(path: Path) -> str:
    return f"{path.name}#sha256:{file_sha256(path)[:16]}"


_registry_lock = threading.Lock()
_registry_dir: Path | None = None


def _config_dir() -> Path:
    global _registry_dir  # noqa: PLW0603 - one scratch folder per process, removed at exit
    if _registry_dir is None:
        _registry_dir = Path(tempfile.mkdtemp(prefix="mmrag-open-clip-configs-"))
        atexit.register(shutil.rmtree, _registry_dir, ignore_errors=True)
    return _registry_dir


def register_model_config(model_name: str, model_cfg: Mapping[str, Any]) -> None:
    """Makes ``model_name`` a model open_clip can build, with architecture ``model_cfg``.

    open_clip only knows configs from JSON files named after the model, so the config is
    written to a scratch folder and added; a later registration of the same name wins.
    """
    import open_clip

    if not _MODEL_NAME.fullmatch(model_name):
        msg = (
            f"model name {model_name!r} cannot name an open_clip config: use letters, digits, "
            "'.', '_', '+' and '-' only"
        )
        raise ConfigurationError(msg)
    if not all(key in model_cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
        msg = f"the config of {model_name} lacks embed_dim, vision_cfg or text_cfg"
        raise ConfigurationError(msg)
    text = json.dumps(model_cfg, sort_keys=True)
    with _registry_lock:
        if open_clip.get_model_config(model_name) == json.loads(text):
            return
        folder = _config_dir() / hashlib.sha256(text.encode()).hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        path = folder / f"{model_name}.json"
        path.write_text(text, encoding="utf-8")
        open_clip.add_model_config(path)


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """What ``open_clip_config.json`` (and ``model_card.json``) beside a checkpoint say."""

    model_name: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    aligned: bool | None  # None: neither file says


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path} is unreadable ({exc}); fix or remove it"
        raise ModelUnavailableError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{path} is not a JSON object; fix or remove it"
        raise ModelUnavailableError(msg)
    return data


def read_checkpoint_config(checkpoint: Path) -> CheckpointConfig | None:
    """The architecture saved beside ``checkpoint``, or None when there is none.

    Only a config that names its model counts: the hub's own ``open_clip_config.json`` files
    have no ``model_name``, and a checkpoint beside one keeps using ``clip.model``."""
    path = checkpoint.parent / CHECKPOINT_CONFIG_NAME
    config = _read_json(path)
    if config is None or "model_name" not in config:
        return None
    name, model_cfg = config.get("model_name"), config.get("model_cfg")
    preprocess_cfg = config.get("preprocess_cfg") or {}
    if not isinstance(name, str) or not isinstance(model_cfg, dict):
        msg = f"{path} needs a model_name and a model_cfg (open_clip's hub format)"
        raise ModelUnavailableError(msg)
    if not isinstance(preprocess_cfg, dict):
        msg = f"{path}: preprocess_cfg must be an object"
        raise ModelUnavailableError(msg)
    aligned = config.get("aligned")
    if not isinstance(aligned, bool):
        card = _read_json(checkpoint.parent / MODEL_CARD_NAME) or {}
        aligned = card.get("aligned") if isinstance(card.get("aligned"), bool) else None
    return CheckpointConfig(name, model_cfg, preprocess_cfg, aligned)


def pretrained_available(model_name: str, pretrained: str, *, probe_timeout_s: float) -> bool:
    """Whether ``pretrained`` weights can be had now: in the local cache, or the hub is up."""
    import open_clip

    if pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        return False
    if hub_reachable(probe_timeout_s):
        return True
    try:
        with hub_offline(offline=True):
            return bool(
                open_clip.download_pretrained(open_clip.get_pretrained_cfg(model_name, pretrained))
            )
    except (RuntimeError, OSError, ValueError):
        return False


class OpenClipEmbedder:
    """An open_clip model; both towers return L2-normalised float32 rows."""

    def __init__(
        self,
        model_name: str,
        *,
        pretrained: str,
        checkpoint: Path | None = None,
        aligned: bool | None = None,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 32,
        hub_probe_timeout_s: float = 3.0,
    ) -> None:
        import open_clip
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._device = resolve_device(device)
        self._batch_size = batch_size
        self._lock = threading.Lock()  # one forward pass at a time; torch uses all threads

        beside = read_checkpoint_config(checkpoint) if checkpoint is not None else None
        preprocess: dict[str, Any] = {}
        if beside is not None:
            register_model_config(beside.model_name, beside.model_cfg)
            if beside.model_name != model_name:
                log.info(
                    "checkpoint %s is a %s (its %s); clip.model=%s is not used",
                    checkpoint,
                    beside.model_name,
                    CHECKPOINT_CONFIG_NAME,
                    model_name,
                )
            model_name = beside.model_name
            if aligned is None:
                aligned = beside.aligned
            preprocess = {
                arg: beside.preprocess_cfg[key]
                for key, arg in _PREPROCESS_OVERRIDES.items()
                if beside.preprocess_cfg.get(key) is not None
            }

        if model_name not in open_clip.list_models():
            msg = (
                f"unknown open_clip model {model_name!r} (setting clip.model / MMRAG_CLIP__MODEL);"
                f" some known ones: {', '.join(open_clip.list_models()[:8])}, ..."
            )
            raise ConfigurationError(msg)

        weights, weights_label = self._resolve_weights(
            open_clip, model_name, pretrained, checkpoint, hub_probe_timeout_s
        )
        try:
            # Random weights are seeded so every process (ingestion, service) builds the same
            # model; without this, image-to-image search across processes would be noise.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model, _, transform = open_clip.create_model_and_transforms(
                    model_name, pretrained=weights, device=self._device, **preprocess
                )
        except (
            RuntimeError,
            OSError,
            ValueError,
            KeyError,
            EOFError,
            pickle.UnpicklingError,
        ) as exc:
            msg = (
                f"could not load open_clip weights {weights_label!r} for {model_name}: "
                f"{str(exc)[:300]}. Point MMRAG_CLIP__CHECKPOINT at a {model_name} state_dict "
                "(.pt/.bin/.safetensors), or check the network."
            )
            raise ModelUnavailableError(msg) from exc
        model.eval()
        self._model: Any = model
        self._preprocess: Any = transform
        self._tokenizer: Any = open_clip.get_tokenizer(model_name)
        dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        is_random = weights is None
        self._info = EmbeddingModelInfo(
            name=f"open_clip/{model_name}",
            dim=dim,
            weights=weights_label,
            aligned=(not is_random) if aligned is None else aligned,
        )
        if is_random:
            log.warning(
                "open_clip %s runs with RANDOM weights (clip.pretrained=none): image-to-image "
                "matches still work, text-to-image ones do not",
                model_name,
            )

    @staticmethod
    def _resolve_weights(
        open_clip: Any,
        model_name: str,
        pretrained: str,
        checkpoint: Path | None,
        probe_timeout_s: float,
    ) -> tuple[str | None, str]:
        """Returns (what to pass to open_clip as ``pretrained``, a label for the collection)."""
        if checkpoint is not None:
            if not checkpoint.is_file():
                msg = (
                    f"CLIP checkpoint file {checkpoint} does not exist (setting clip.checkpoint /"
                    " MMRAG_CLIP__CHECKPOINT)"
                )
                raise ModelUnavailableError(msg)
            return str(checkpoint), _file_fingerprint(checkpoint)
        if pretrained.lower() == RANDOM_WEIGHTS:
            return None, f"{RANDOM_WEIGHTS} (seed {RANDOM_SEED})"
        known = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in known:
            msg = (
                f"open_clip has no pretrained tag {pretrained!r} for {model_name} (setting "
                f"clip.pretrained / MMRAG_CLIP__PRETRAINED); known tags: {', '.join(known)}"
            )
            raise ConfigurationError(msg)
        if not hub_reachable(probe_timeout_s):
            # Only the local cache can serve it now; say exactly what to do if it cannot.
            try:
                with hub_offline(offline=True):
                    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
                    path = open_clip.download_pretrained(cfg)
            except (RuntimeError, OSError, ValueError) as exc:
                msg = (
                    f"open_clip weights {model_name}/{pretrained} are not in the local cache and "
                    f"the model hub ({hub_endpoint()}) cannot be reached. Either allow network "
                    "access once, or download the weights elsewhere and set "
                    "MMRAG_CLIP__CHECKPOINT=/path/to/open_clip_model.safetensors (or .bin); "
                    "MMRAG_CLIP__PRETRAINED=none gives random weights (tests only)."
                )
                raise ModelUnavailableError(msg) from exc
            if not path:
                msg = f"open_clip weights {model_name}/{pretrained} have no download location"
                raise ModelUnavailableError(msg)
            return str(path), pretrained
        return pretrained, pretrained

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._info

    def state_dict(self) -> dict[str, Any]:
        """The model's weights, as ``torch.save`` writes a checkpoint."""
        return dict(self._model.state_dict())

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        import torch

        rows: list[FloatMatrix] = []
        for start in range(0, len(images), self._batch_size):
            batch = images[start : start + self._batch_size]
            pixels = torch.stack([self._preprocess(img.convert("RGB")) for img in batch])
            with self._lock, torch.inference_mode():
                feats = self._model.encode_image(pixels.to(self._device), normalize=True)
            rows.append(feats.float().cpu().numpy())
        return self._stack(rows)

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        import torch

        rows: list[FloatMatrix] = []
        for start in range(0, len(texts), self._batch_size):
            tokens = self._tokenizer(list(texts[start : start + self._batch_size]))
            with self._lock, torch.inference_mode():
                feats = self._model.encode_text(tokens.to(self._device), normalize=True)
            rows.append(feats.float().cpu().numpy())
        return self._stack(rows)

    def _stack(self, rows: list[FloatMatrix]) -> FloatMatrix:
        if not rows:
            return np.zeros((0, self._info.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def pretrained_weights(model_name: str, pretrained: str, *, probe_timeout_s: float) -> str:
    """What to give open_clip as ``pretrained`` for a tag (the tag, or its cached file when the
    hub is unreachable); fails like the embedder does, with the same messages."""
    import open_clip

    weights, _ = OpenClipEmbedder._resolve_weights(
        open_clip, model_name, pretrained, None, probe_timeout_s
    )
    if weights is None:
        msg = f"{pretrained!r} is not a pretrained tag of {model_name}"
        raise ConfigurationError(msg)
    return weights
