"""Small open_clip architectures for training from scratch on a CPU (``train --arch NAME``).

Each is an open_clip model config (the JSON open_clip keeps in ``model_configs/``); the trainer
registers the one it uses with open_clip at run time and saves it beside the weights. They keep
CLIP's BPE tokenizer and its 49,408-token vocabulary, so any caption works (the token table is
most of their ~7.6M parameters and of their 30 MB ``model.pt``).

Training throughput on 2 CPU cores, batch 256, images kept in memory (2026-11 measurements):
``mmrag-tiny`` ~720 pairs/s, ``mmrag-small`` ~265 pairs/s.
"""

from __future__ import annotations

import copy
from typing import Any

_TEXT_TINY = {"context_length": 20, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2}

BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    # 32x32 images as a 4x4 grid of 8-pixel patches: enough for shapes, colours and product
    # silhouettes (Fashion-MNIST), and fast. Patches of 4 pixels (64 tokens) cost 3x as much.
    "mmrag-tiny": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 8,
            "layers": 4,
            "width": 128,
            "head_width": 32,
        },
        "text_cfg": dict(_TEXT_TINY),
    },
    # 64x64 images as an 8x8 grid of 8-pixel patches: more of a photo survives, ~2.7x slower.
    "mmrag-small": {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 64,
            "patch_size": 8,
            "layers": 4,
            "width": 128,
            "head_width": 32,
        },
        "text_cfg": dict(_TEXT_TINY),
    },
}

DESCRIPTIONS = {
    "mmrag-tiny": "ViT 32px / 8px patches, 4x128; text 2x128; 64-d",
    "mmrag-small": "ViT 64px / 8px patches, 4x128; text 2x128; 64-d",
}


def builtin_config(name: str) -> dict[str, Any] | None:
    """A copy of the built-in config called ``name``, or None."""
    cfg = BUILTIN_CONFIGS.get(name)
    return copy.deepcopy(cfg) if cfg is not None else None
