"""The real open_clip and sentence-transformers code: weights loading, normalisation, errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.errors import ConfigurationError, ModelUnavailableError


def test_checkpoint_file_loads_and_gives_the_same_vectors(
    clip: OpenClipEmbedder, sample_library: Path, clip_checkpoint: Path
) -> None:
    checkpoint = clip_checkpoint
    loaded = OpenClipEmbedder("ViT-B-32", pretrained="none", checkpoint=checkpoint, device="cpu")

    image = Image.open(sample_library / "photos" / "animals" / "chelsea.jpg")
    texts = ["a cat", "a rocket launch"]
    np.testing.assert_allclose(loaded.embed_images([image]), clip.embed_images([image]), atol=1e-5)
    np.testing.assert_allclose(loaded.embed_texts(texts), clip.embed_texts(texts), atol=1e-5)
    assert loaded.info.weights.startswith("clip-vit-b-32.pt#sha256:")
    # A checkpoint is assumed aligned unless said otherwise; this one says otherwise.
    assert loaded.info.aligned is True
    unaligned = OpenClipEmbedder(
        "ViT-B-32", pretrained="none", checkpoint=checkpoint, aligned=False, device="cpu"
    )
    assert unaligned.info.aligned is False


def test_random_weights_are_explicit_seeded_and_never_aligned(clip: OpenClipEmbedder) -> None:
    assert clip.info.weights == "none (seed 0)"
    assert clip.info.aligned is False
    assert clip.info.dim == 512
    again = OpenClipEmbedder("ViT-B-32", pretrained="none", device="cpu")
    np.testing.assert_allclose(again.embed_texts(["same"]), clip.embed_texts(["same"]), atol=1e-6)


def test_vectors_are_normalised_float32(
    clip: OpenClipEmbedder, text_model: SentenceTextEmbedder
) -> None:
    images = [Image.new("RGB", (64, 48), c) for c in ("red", "blue", "white")]
    for matrix, dim in (
        (clip.embed_images(images), 512),
        (clip.embed_texts(["one", "two"]), 512),
        (text_model.embed_texts(["one", "two"]), 384),
    ):
        assert matrix.dtype == np.float32
        assert matrix.shape[1] == dim
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert clip.embed_images([]).shape == (0, 512)


def test_missing_checkpoint_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="MMRAG_CLIP__CHECKPOINT"):
        OpenClipEmbedder("ViT-B-32", pretrained="none", checkpoint=tmp_path / "nope.pt")


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match=r"could not load open_clip weights 'truncated"):
        OpenClipEmbedder("ViT-B-32", pretrained="none", checkpoint=bad)


def test_unknown_model_and_tag_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown open_clip model 'ViT-Nope'"):
        OpenClipEmbedder("ViT-Nope", pretrained="none")
    with pytest.raises(ConfigurationError, match=r"known tags: .*laion2b_s34b_b79k"):
        OpenClipEmbedder("ViT-B-32", pretrained="no-such-tag")


def test_pretrained_weights_offline_fail_fast_and_say_what_to_do() -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        OpenClipEmbedder("ViT-B-32", pretrained="laion2b_s34b_b79k", hub_probe_timeout_s=2)
    assert time.monotonic() - started < 20  # seconds, not a 40-second retry loop
    message = str(info.value)
    assert "not in the local cache" in message
    assert "MMRAG_CLIP__CHECKPOINT" in message
    assert "MMRAG_CLIP__PRETRAINED=none" in message


def test_text_model_from_a_missing_path_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="MMRAG_TEXT__MODEL"):
        SentenceTextEmbedder(str(tmp_path / "no-model"), hub_probe_timeout_s=1)


def test_checkpoint_digests_are_cached_by_size_and_time(tmp_path: Path) -> None:
    """A big checkpoint is hashed once per version of the file, not at every start."""
    import hashlib
    import os

    from app.adapters.fingerprints import file_sha256

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"a" * 1000)
    cache = tmp_path / "cache"
    first = file_sha256(weights, cache_dir=cache)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    st = weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size; time put back: the cached digest is trusted
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(weights, cache_dir=cache) == first
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: hashed again
    assert file_sha256(weights, cache_dir=cache) == hashlib.sha256(b"b" * 1000).hexdigest()
