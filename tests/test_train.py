"""``python -m ingestion train``: the real open_clip model, transforms, tokenizer and ClipLoss,
trained from scratch on generated shapes (4 shapes x 4 colours, 32x32) on the CPU.

One model is trained per module (~30 s on 2 cores) and shared; the other runs are a few steps.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from app.adapters.openclip import OpenClipEmbedder
from app.core.errors import ConfigurationError, InputError
from ingestion.cli import main
from ingestion.train import (
    EpochReport,
    HeldOut,
    StepStatus,
    TrainOptions,
    TrainResult,
    read_pairs,
    recall_metrics,
    split_images,
    train,
)

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (40, 60, 220),
    "yellow": (235, 200, 20),
}


def draw(shape: str, colour: str, rng: random.Random, size: int = 32) -> Image.Image:
    """A shape of random size and position on a light background."""
    img = Image.new("RGB", (size, size), (235, 235, 235))
    pen = ImageDraw.Draw(img)
    rgb = COLOURS[colour]
    r = rng.uniform(0.25, 0.4) * size
    x, y = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if shape == "circle":
        pen.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
    elif shape == "square":
        pen.rectangle((x - r, y - r, x + r, y + r), fill=rgb)
    elif shape == "triangle":
        pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=rgb)
    else:
        w = r / 3
        pen.rectangle((x - r, y - w, x + r, y + w), fill=rgb)
        pen.rectangle((x - w, y - r, x + w, y + r), fill=rgb)
    return img


def kind(i: int) -> tuple[str, str]:
    return SHAPES[i % 4], list(COLOURS)[(i // 4) % 4]


def write_shapes(folder: Path, n: int, seed: int = 0) -> None:
    """A library folder: ``captions.csv`` gives every image "a red circle"; every other image
    also has a sidecar with two more captions, one a line."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        shape, colour = kind(i)
        name = f"{i:04d}.png"
        draw(shape, colour, rng).save(folder / name)
        rows.append((name, f"a {colour} {shape}"))
        if i % 2:
            sidecar = folder / f"{name}.txt"
            sidecar.write_text(f"a photo of a {colour} {shape}\na {shape} in {colour}\n")
    with (folder / "captions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption", "tags"])
        writer.writerows((name, caption, "shapes") for name, caption in rows)


def write_jsonl(folder: Path, n: int, seed: int = 1) -> Path:
    """``pairs.jsonl`` with images in a subfolder, paths relative to the file, plus bad lines:
    a missing image, a row without a caption, a line that is not JSON."""
    rng = random.Random(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        shape, colour = kind(i)
        draw(shape, colour, rng).save(folder / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "caption": f"a {colour} {shape}"}))
    lines.insert(3, json.dumps({"image": "img/missing.png", "caption": "a red circle"}))
    lines.insert(5, json.dumps({"image": "img/0.png"}))
    lines.insert(7, "{not json")
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    write_shapes(folder, 640)
    return folder


class Recorder:
    """A TrainProgress that keeps what it is told."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int, int]] = []
        self.steps: list[StepStatus] = []
        self.epochs: list[EpochReport] = []
        self.notes: list[str] = []

    def begin(self, phase: str, total: int, done: int = 0) -> None:
        self.phases.append((phase, total, done))

    def advance(self, done: int, status: StepStatus | None = None) -> None:
        if status is not None:
            self.steps.append(status)

    def epoch_done(self, report: EpochReport) -> None:
        self.epochs.append(report)

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.fixture(scope="module")
def trained(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Recorder]:
    recorder = Recorder()
    options = TrainOptions(
        pairs=shapes,
        out=tmp_path_factory.mktemp("run") / "model",
        arch="mmrag-tiny",
        epochs=6,
        batch_size=64,
        val_fraction=0.2,
        patience=0,
        device="cpu",
    )
    return train(options, recorder), recorder


def test_training_from_scratch_aligns_text_with_images(
    trained: tuple[TrainResult, Recorder],
) -> None:
    result, recorder = trained
    assert result.model_name == "mmrag-tiny"
    assert (result.epochs, result.steps) == (6, 6 * (result.train_pairs // 64))
    assert (result.train_images, result.held_out_images) == (512, 128)
    # Every image has one caption from captions.csv, every other one two more from a sidecar.
    assert result.train_pairs + result.held_out_captions == 320 * 1 + 320 * 3
    assert result.skipped == 0
    m = result.metrics
    # Chance here: ~1/16 for "a red circle" (all red circles are relevant), less for the
    # sidecar captions.
    assert m["t2i_r1"] > 3 * m["t2i_r1_chance"], m
    assert m["t2i_r10"] >= m["t2i_r5"] >= m["t2i_r1"]
    assert m["i2t_r1"] > 0.15, m
    # The progress reports: a reading phase, then training with the loss and throughput.
    assert [p[0] for p in recorder.phases] == ["reading images", "training"]
    assert len(recorder.steps) == result.steps
    assert recorder.steps[-1].pairs_per_s > 0
    assert recorder.steps[-1].loss < recorder.steps[0].loss
    assert [e.epoch for e in recorder.epochs] == [1, 2, 3, 4, 5, 6]
    assert result.best_epoch in {e.epoch for e in recorder.epochs if e.improved}


def test_output_folder_holds_open_clip_files_and_a_card(
    trained: tuple[TrainResult, Recorder], shapes: Path
) -> None:
    result, _ = trained
    out = result.out_dir
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "last.pt",
        "model.pt",
        "model_card.json",
        "model_card.md",
        "open_clip_config.json",
    ]
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_name"] == "mmrag-tiny"
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 32
    assert config["preprocess_cfg"]["size"] == [32, 32]
    card = json.loads((out / "model_card.json").read_text())
    assert card["aligned"] is True
    assert card["data"]["source"] == str(shapes.resolve())
    assert card["training"]["epochs"] == 6
    assert card["held_out_metrics"]["t2i_r1"] == pytest.approx(result.metrics["t2i_r1"], abs=1e-4)
    assert card["usage"]["MMRAG_CLIP__CHECKPOINT"] == str((out / "model.pt").resolve())
    text = (out / "model_card.md").read_text()
    assert "MMRAG_CLIP__CHECKPOINT=" in text
    assert "text to image recall@1" in text
    # model.pt is a plain state_dict that open_clip itself loads.
    import open_clip

    from app.adapters.openclip import register_model_config

    register_model_config("mmrag-tiny", config["model_cfg"])
    model, _, _ = open_clip.create_model_and_transforms(
        "mmrag-tiny", pretrained=str(out / "model.pt")
    )
    assert model.visual.image_size == (32, 32)


def test_embedder_loads_the_checkpoint_by_itself(trained: tuple[TrainResult, Recorder]) -> None:
    result, _ = trained
    clip = OpenClipEmbedder(
        "ViT-B-32", pretrained="none", checkpoint=result.checkpoint, device="cpu"
    )
    assert clip.info.name == "open_clip/mmrag-tiny"
    assert clip.info.dim == 64
    assert clip.info.aligned is True
    assert clip.info.weights.startswith("model.pt#sha256:")
    # The vectors the trainer recorded for the saved weights, through the embedder.
    assert len(result.probe_texts) == result.probe_vectors.shape[0] > 0
    np.testing.assert_allclose(
        clip.embed_texts(list(result.probe_texts)), result.probe_vectors, atol=1e-5
    )
    # Text finds the right image through the embedder: a fresh red circle and blue square.
    rng = random.Random(99)
    images = [draw("circle", "red", rng), draw("square", "blue", rng)]
    texts = clip.embed_texts(["a red circle", "a blue square"])
    sims = texts @ clip.embed_images(images).T
    assert sims[0, 0] > sims[0, 1]
    assert sims[1, 1] > sims[1, 0]
    # An explicit setting still wins over the card.
    unaligned = OpenClipEmbedder(
        "ViT-B-32", pretrained="none", checkpoint=result.checkpoint, aligned=False, device="cpu"
    )
    assert unaligned.info.aligned is False


def test_resume_continues_where_the_run_stopped(shapes: Path, tmp_path: Path) -> None:
    base = {
        "pairs": shapes,
        "arch": "mmrag-tiny",
        "batch_size": 32,
        "max_pairs": 96,
        "val_fraction": 0.0,
        "device": "cpu",
    }
    whole = train(TrainOptions(out=tmp_path / "whole", epochs=2, **base))

    class StopAfterFirstEpoch(Recorder):
        def epoch_done(self, report: EpochReport) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(out=tmp_path / "cut", epochs=2, **base), StopAfterFirstEpoch())
    first = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    with pytest.raises(ConfigurationError, match="--resume continues it"):
        train(TrainOptions(out=tmp_path / "cut", epochs=2, **base))

    recorder = Recorder()
    resumed = train(TrainOptions(out=tmp_path / "cut", epochs=2, resume=True, **base), recorder)
    assert [e.epoch for e in recorder.epochs] == [2]
    assert any("resuming after epoch 1" in n for n in recorder.notes)
    assert (resumed.epochs, resumed.steps) == (2, whole.steps)
    second = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    # It went on training (not the 1-epoch weights), exactly as an uninterrupted run did.
    reference = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    for key, value in reference.items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=1e-6)

    more = train(TrainOptions(out=tmp_path / "cut", epochs=3, resume=True, **base))
    assert (more.epochs, more.steps) == (3, whole.steps * 3 // 2)
    card = json.loads((tmp_path / "cut" / "model_card.json").read_text())
    assert [h["epoch"] for h in card["training"]["history"]] == [1, 2, 3]


def test_jsonl_pairs_with_bad_rows_are_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = write_jsonl(tmp_path / "data", 48)
    options = TrainOptions(
        pairs=pairs, out=tmp_path / "out", arch="mmrag-tiny", epochs=1, batch_size=16, device="cpu"
    )
    result = train(options)
    assert result.train_images + result.held_out_images == 48
    assert result.skipped == 3
    reasons = " | ".join(result.skipped_examples)
    assert "missing.png: unreadable image" in reasons
    assert "pairs.jsonl:6: img/0.png: no caption" in reasons
    assert "pairs.jsonl:8: not JSON" in reasons
    # Images too many to keep in memory are read per batch, by a worker process: same model.
    monkeypatch.setattr("ingestion.train._CACHE_LIMIT_BYTES", 0)
    lazy = train(dataclasses.replace(options, out=tmp_path / "lazy", workers=1))
    assert (lazy.skipped, lazy.train_pairs, lazy.steps) == (3, result.train_pairs, result.steps)
    cached = torch.load(result.checkpoint, weights_only=True)
    for key, value in torch.load(lazy.checkpoint, weights_only=True).items():
        torch.testing.assert_close(value, cached[key], rtol=0, atol=1e-6)


def test_fine_tuning_a_checkpoint_with_the_image_tower_locked(
    trained: tuple[TrainResult, Recorder], shapes: Path, tmp_path: Path
) -> None:
    result, _ = trained
    tuned = train(
        TrainOptions(
            pairs=shapes,
            out=tmp_path / "tuned",
            base=str(result.out_dir),  # a folder: its model.pt and open_clip_config.json
            lock_image=True,
            epochs=1,
            batch_size=32,
            max_pairs=64,
            val_fraction=0.0,
            lr=1e-4,
            device="cpu",
        )
    )
    assert tuned.model_name == "mmrag-tiny"
    before = torch.load(result.checkpoint, weights_only=True)
    after = torch.load(tuned.checkpoint, weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
    assert not torch.equal(before["text_projection"], after["text_projection"])
    card = json.loads((tmp_path / "tuned" / "model_card.json").read_text())
    assert card["base"] == str(result.checkpoint.resolve())
    assert card["training"]["locked"] == ["image"]


def test_cli_trains_end_to_end(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            str(shapes),
            "--out",
            str(out),
            "--arch",
            "mmrag-tiny",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--max-pairs",
            "96",
            "--device",
            "cpu",
            "--image-augment",
            "light",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"MMRAG_CLIP__CHECKPOINT={(out / 'model.pt').resolve()}" in printed
    assert "MMRAG_CLIP__MODEL=mmrag-tiny" in printed
    assert "text→image R@1" in printed
    assert (out / "model.pt").is_file()
    # A missing resume state is refused, saying what to do.
    assert main(["train", str(shapes), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "does not exist; start the run without --resume" in capsys.readouterr().out


def test_cli_refuses_what_it_cannot_do_with_clear_messages(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x")
    # Offline, a pretrained tag cannot be had: say so and what to do instead.
    assert main(["train", str(shapes), "--out", out, "--from", "ViT-B-32:laion2b_s34b_b79k"]) == 2
    printed = capsys.readouterr().out
    assert "--from ViT-B-32:laion2b_s34b_b79k" in printed
    assert "--arch mmrag-tiny" in printed
    assert main(["train", str(shapes), "--out", out, "--arch", "no-such-arch"]) == 2
    assert "not a built-in (mmrag-tiny" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "nothing"), "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert main(["train", str(shapes), "--out", out, "--lock-image"]) == 2
    assert "need --from" in capsys.readouterr().out


def test_folder_pairs_read_sidecars_and_manifest_rows(tmp_path: Path) -> None:
    rng = random.Random(0)
    for name in ("a.png", "b.png", "c.png"):
        draw("circle", "red", rng).save(tmp_path / name)
    (tmp_path / "a.png.txt").write_text("a red circle\n\na small red disc\n")
    (tmp_path / "captions.csv").write_text(
        "file,caption,split\nb.png,a red ball,val\nb.png,a red dot,\ngone.png,lost,\n"
    )
    pairs = read_pairs(tmp_path)
    by_name = {p.name: c for p, c in zip(pairs.images, pairs.captions, strict=True)}
    assert by_name == {
        "a.png": ["a red circle", "a small red disc"],
        "b.png": ["a red ball", "a red dot"],
    }
    assert pairs.held_out == [None, True]
    assert pairs.skipped.count == 2
    assert any("c.png: no caption" in r for r in pairs.skipped.examples)
    assert any("gone.png not found" in r for r in pairs.skipped.examples)
    with pytest.raises(InputError, match=r"must be a folder, a \.csv or a \.jsonl file"):
        read_pairs(tmp_path / "a.png.txt")
    (tmp_path / "empty.csv").write_text("image,caption\nnowhere.png,\n")
    with pytest.raises(InputError, match=r"no usable image-caption pairs.*no caption"):
        read_pairs(tmp_path / "empty.csv")


def test_held_out_split_is_per_image_and_seeded() -> None:
    train_a, held_a = split_images([None] * 50, 0.2, seed=3)
    assert (len(train_a), len(held_a)) == (40, 10)
    assert split_images([None] * 50, 0.2, seed=3) == (train_a, held_a)
    assert split_images([None] * 50, 0.2, seed=4) != (train_a, held_a)
    assert sorted(train_a + held_a) == list(range(50))
    # A split column wins; rows without one train.
    assert split_images([True, None, False, True], 0.5, seed=0) == ([1, 2], [0, 3])


def test_recall_counts_any_image_sharing_the_caption() -> None:
    # Two images share "a cat" (spacing and case aside); one image has two captions.
    held = HeldOut.build([0, 1, 2, 3], [["a cat"], ["A  cat"], ["a dog"], ["a dog", "a puppy"]])
    assert held.texts == ["a cat", "a dog", "a puppy"]
    assert held.text_images == [[0, 1], [2, 3], [3]]
    texts = torch.eye(3)  # cat, dog, puppy
    images = torch.tensor([[0.6, 0.8, 0.0], [1.0, 0, 0], [0, 0.7, 0.71], [0, 0.6, 0.8]])
    m = recall_metrics(images, texts, held)
    # cat: image 1 first (a hit); dog: image 0 first (a miss), image 2 second; puppy: image 3.
    assert m["t2i_r1"] == pytest.approx((2 + 0 + 1) / 5)
    assert m["t2i_r5"] == m["t2i_r10"] == 1.0
    assert m["t2i_r1_chance"] == pytest.approx((2 * 0.5 + 2 * 0.5 + 0.25) / 5)
    assert m["t2i_p10"] == pytest.approx((2 * 0.5 + 2 * 0.5 + 0.25) / 5)
    # Best text per image: dog (miss), cat (hit), puppy (miss), puppy (hit).
    assert m["i2t_r1"] == 0.5


def test_bad_options_are_input_errors(shapes: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--batch-size must be at least 2"):
        train(TrainOptions(pairs=shapes, out=tmp_path, batch_size=1))
    with pytest.raises(InputError, match="--lock-image and --lock-text together"):
        train(TrainOptions(pairs=shapes, out=tmp_path, base="x", lock_image=True, lock_text=True))
    copy = tmp_path / "one"
    copy.mkdir()
    shutil.copy(shapes / "0000.png", copy / "0000.png")
    (copy / "0000.png.txt").write_text("a red circle\n")
    with pytest.raises(InputError, match="1 usable training pair"):
        train(TrainOptions(pairs=copy, out=tmp_path / "o", device="cpu"))


def test_early_stopping_keeps_the_best_weights(shapes: Path, tmp_path: Path) -> None:
    # A rate too small to move float32 weights: no epoch after the first can be better.
    options = TrainOptions(
        pairs=shapes,
        out=tmp_path / "stop",
        epochs=5,
        batch_size=32,
        max_pairs=128,
        val_fraction=0.25,
        patience=1,
        lr=1e-12,
        device="cpu",
    )
    recorder = Recorder()
    result = train(options, recorder)
    assert (result.epochs, result.best_epoch, result.stopped_early) == (2, 1, True)
    assert [e.improved for e in recorder.epochs] == [True, False]
    # A stopped run stays stopped when resumed.
    again = train(dataclasses.replace(options, resume=True))
    assert (again.epochs, again.steps) == (2, result.steps)
    assert again.metrics == result.metrics


def test_arch_from_an_open_clip_config_file(shapes: Path, tmp_path: Path) -> None:
    from ingestion.clip_configs import builtin_config

    cfg = builtin_config("mmrag-tiny")
    assert cfg is not None
    cfg["embed_dim"] = 32
    path = tmp_path / "my-clip.json"
    path.write_text(json.dumps(cfg))
    result = train(
        TrainOptions(
            pairs=shapes,
            out=tmp_path / "out",
            arch=str(path),
            epochs=1,
            batch_size=32,
            max_pairs=64,
            val_fraction=0.0,
            device="cpu",
        )
    )
    assert result.model_name == "my-clip"
    clip = OpenClipEmbedder("ViT-B-32", pretrained="none", checkpoint=result.checkpoint)
    assert (clip.info.name, clip.info.dim) == ("open_clip/my-clip", 32)
    assert clip.embed_texts(["a red circle"]).shape == (1, 32)


def test_a_hub_config_without_a_model_name_changes_nothing(tmp_path: Path) -> None:
    # open_clip_config.json as the model hub ships it (no model_name): clip.model still rules.
    import open_clip

    from app.adapters.openclip import register_model_config
    from ingestion.clip_configs import builtin_config

    cfg = builtin_config("mmrag-tiny")
    assert cfg is not None
    register_model_config("mmrag-tiny", cfg)
    model = open_clip.create_model("mmrag-tiny", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    hub = {"model_cfg": {**cfg, "embed_dim": 16}, "preprocess_cfg": {}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(hub))
    clip = OpenClipEmbedder(
        "mmrag-tiny", pretrained="none", checkpoint=tmp_path / "open_clip_pytorch_model.bin"
    )
    assert (clip.info.name, clip.info.dim) == ("open_clip/mmrag-tiny", 64)
