"""Answer benchmark: time to first token and total time of ``/v1/ask`` with the local model.

Builds the demo's sample library under ``bench/.cache/answer/`` (once), ingests it with the real
CLI (random CLIP weights, real MiniLM), starts the real service (``python -m app``, provider
``local``) on a free loopback port, and asks each question ``--rounds`` times with
``"stream": true``, one request at a time. For each request it records, client-side:

* retrieval: time until the ``hits`` event (embedding + engine search + HTTP);
* prompt: from ``hits`` to the first ``delta`` (the model reading the prompt);
* generation: from the first ``delta`` to the ``answer`` event;
* deltas/s: answer-text deltas over the generation time. llama.cpp streams about one token per
  delta, but with JSON-constrained output the framing (``{"answer": "``) and the ``sources``
  list are generated without being streamed, so this understates the model's token rate.

Target (issue 6): time to first token <= retrieval + 1.5 s on this machine. Output: a markdown
table per question, then the medians. Run from the repository root::

    .venv/bin/python -m bench.answer [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache" / "answer"
QUESTIONS = (
    "How much dry food does Chelsea the cat eat?",
    "Who was the first woman to command a space shuttle?",
    "What temperature should the milk be for latte art?",
    "How long should a double espresso shot run?",
)
TARGET_S = 1.5


@dataclass(frozen=True)
class Run:
    retrieval: float
    first_token: float
    total: float
    deltas: int

    @property
    def prompt(self) -> float:
        return self.first_token - self.retrieval

    @property
    def generation(self) -> float:
        return self.total - self.first_token

    @property
    def tokens_per_s(self) -> float:
        return self.deltas / self.generation if self.generation > 0 else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "MMRAG_DATA_DIR": str(CACHE / "data"),
        "MMRAG_COLLECTION": "bench",
        "MMRAG_CLIP__PRETRAINED": "none",
        "MMRAG_LLM__PROVIDER": "local",
        "MMRAG_HTTP__PORT": str(port),
        "MMRAG_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def prepare(env: dict[str, str]) -> None:
    from app.demo.library import build_library

    build_library(CACHE / "library")
    subprocess.run([sys.executable, "-m", "app", "models", "fetch"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [sys.executable, "-m", "ingestion", "ingest", str(CACHE / "library"), "--quiet"],
        env=env,
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def ask(client: httpx.Client, question: str) -> Run:
    start = time.perf_counter()
    retrieval = first = 0.0
    deltas = 0
    event = ""
    with client.stream("POST", "/v1/ask", json={"question": question, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            now = time.perf_counter() - start
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                if event == "hits":
                    retrieval = now
                elif event == "delta":
                    deltas += 1
                    first = first or now
                elif event == "answer":
                    json.loads(line.removeprefix("data:"))
                    return Run(retrieval, first or now, now, deltas)
                elif event == "error":
                    raise RuntimeError(line)
    raise RuntimeError("the stream ended without an answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    port = free_port()
    env = environment(port)
    prepare(env)
    server = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=ROOT)
    runs: list[Run] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            ask(client, QUESTIONS[0])  # warm-up
            print(
                "| question | retrieval s | prompt s | generation s | TTFT s | total s | deltas/s |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for question in QUESTIONS:
                for _ in range(args.rounds):
                    run = ask(client, question)
                    runs.append(run)
                    print(
                        f"| {question[:44]} | {run.retrieval:.3f} | {run.prompt:.3f} | "
                        f"{run.generation:.3f} | {run.first_token:.3f} | {run.total:.3f} | "
                        f"{run.tokens_per_s:.1f} |",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(timeout=30)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    total = med([r.total for r in runs])
    shares = {
        "retrieval": med([r.retrieval for r in runs]),
        "prompt": med([r.prompt for r in runs]),
        "generation": med([r.generation for r in runs]),
    }
    print(
        f"\nmedians over {len(runs)} requests: total {total:.3f} s; "
        + ", ".join(f"{k} {v:.3f} s ({100 * v / total:.0f}%)" for k, v in shares.items())
    )
    print(f"answer deltas/s (median): {med([r.tokens_per_s for r in runs]):.1f}")
    met = sum(r.first_token <= r.retrieval + TARGET_S for r in runs)
    print(f"time to first token <= retrieval + {TARGET_S} s: {met}/{len(runs)} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
