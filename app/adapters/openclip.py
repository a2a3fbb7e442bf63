"""``OpenClipEmbedder``: images and text into CLIP's joint space with open_clip.

Weights come from a pretrained tag (downloaded the normal way, or from the local cache), a
local checkpoint file, or, only when asked for, random initialisation (tests).
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Sequence
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


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _file_fingerprint(path: Path) -> str:
    return f"{path.name}#sha256:{file_sha256(path)[:16]}"


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
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=weights, device=self._device
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
        self._preprocess: Any = preprocess
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
