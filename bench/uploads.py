"""Memory under a burst of image uploads: ``--clients`` concurrent ``POST /v1/search`` image
queries against the real service, for a small PNG that claims huge dimensions (refused from
its header), a camera-sized JPEG (decoded straight at a reduced size) and a 25 MP PNG (decoded
whole, then reduced); at most ``MMRAG_HTTP__IMAGE_DECODES`` images decode at a time.

Prints, per image: the server's resident memory before, its peak (``VmHWM``) and after, and
each request's status and latency. Uses the answer benchmark's library (``bench/.cache/answer``,
built by ``python -m bench.answer`` or here). Run from the repository root::

    .venv/bin/python -m bench.uploads [--clients 8]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.answer import ROOT, environment, free_port, prepare


def image(width: int, height: int, fmt: str, *, noise: bool) -> bytes:
    buf = io.BytesIO()
    if noise:  # incompressible detail, like a camera photo
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    else:  # a smooth gradient: a small file that decodes to full size
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        img = Image.fromarray(np.broadcast_to(ramp, (height, width)).copy()).convert("RGB")
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    return buf.getvalue()


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def burst(base: str, data: bytes, clients: int) -> list[tuple[int, float]]:
    def one(_: int) -> tuple[int, float]:
        start = time.perf_counter()
        r = httpx.post(
            f"{base}/v1/search",
            files={"image": ("q.png", data, "image/png")},
            data={"top_k": "3", "collection": "bench"},
            timeout=300,
        )
        return r.status_code, time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    port = free_port()
    env = environment(port) | {"MMRAG_LLM__PROVIDER": "extractive"}
    prepare(env)
    server = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        cases = {
            "9400x9400 PNG (88 MP, over the limit)": image(9400, 9400, "PNG", noise=False),
            "4000x3000 JPEG (12 MP camera-sized)": image(4000, 3000, "JPEG", noise=True),
            "5000x5000 PNG (25 MP, at the limit)": image(5000, 5000, "PNG", noise=False),
        }
        for name, data in cases.items():
            before = memory_mb(server.pid, "VmRSS")
            results = burst(base, data, args.clients)
            after = memory_mb(server.pid, "VmRSS")
            peak = memory_mb(server.pid, "VmHWM")
            codes = sorted({code for code, _ in results})
            slowest = max(t for _, t in results)
            print(
                f"{name}: {len(data) / 1e6:.1f} MB x {args.clients} concurrent -> status "
                f"{codes}, slowest {slowest:.2f} s; server RSS {before:.0f} -> {after:.0f} MB "
                f"(peak so far {peak:.0f} MB)",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
