"""Load on a running service: ``--clients`` concurrent clients for ``--seconds``, each sending
its next request as soon as the last one answered (closed loop), on ``/v1/search``,
``/v1/ask`` and the streaming ``/v1/chat``, mixed as ``--mix`` says.

Prints, per route and overall: requests, errors (any status but 200, or a broken stream),
throughput and latency percentiles (p50/p95/p99; for the stream, the time to its first event
too). With ``--baseline`` it first runs one client alone for the same mix, and prints how many
times its throughput the concurrent run reached.

Only a service on this machine is driven (loopback addresses), with bounded clients and time.
Start one first, e.g. on the demo's library with extractive answers::

    set -a && . demo-data/demo.env && set +a
    MMRAG_LLM__PROVIDER=extractive .venv/bin/python -m app &
    .venv/bin/python -m bench.load --clients 20 --seconds 60 --baseline
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import os
import random
import socket
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

MAX_CLIENTS = 64
MAX_SECONDS = 600
QUESTIONS = (
    "How often does the ferry to Stone Island leave?",
    "When is the product launch?",
    "On which days can employees work from home?",
    "When are parking permits renewed?",
    "How much dry food does the cat eat?",
    "a cup of coffee with latte art",
    "rocket launch at night",
    "a red flower in a garden",
    "Who was Grace Hopper?",
    "a temple in China",
    "How do I brew coffee with a French press?",
    "a motorcycle on a street",
    "galaxies in the deep field",
    "What does the handbook say about holidays?",
    "Where does the harbour tour start?",
    "a ginger cat sleeping",
)


@dataclass
class Route:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    first_event_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name not in ("search", "ask", "chat"):
            raise argparse.ArgumentTypeError(f"unknown route {name!r} in --mix")
        mix[name] = float(weight or 1)
    if not any(w > 0 for w in mix.values()):
        raise argparse.ArgumentTypeError("--mix needs a route with a positive weight")
    return mix


async def _one(
    client: httpx.AsyncClient, route: str, question: str, collection: str | None, rec: Route
) -> None:
    body: dict[str, object] = {"top_k": 5}
    if collection:
        body["collection"] = collection
    started = time.perf_counter()
    try:
        if route == "search":
            response = await client.post("/v1/search", json={**body, "query": question})
            ok = response.status_code == 200 and "hits" in response.json()
            status = str(response.status_code)
        elif route == "ask":
            response = await client.post("/v1/ask", json={**body, "question": question})
            ok = response.status_code == 200 and "answer" in response.json()
            status = str(response.status_code)
        else:
            chat = {**body, "messages": [{"role": "user", "content": question}], "stream": True}
            ok = False
            async with client.stream("POST", "/v1/chat", json=chat) as response:
                status = str(response.status_code)
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        if not event:  # the first event: hits, shown at once
                            rec.first_event_ms.append((time.perf_counter() - started) * 1e3)
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "answer":
                        ok = response.status_code == 200 and "citations" in json.loads(line[5:])
                if response.status_code == 200 and not ok:
                    status = "error event" if event == "error" else "no answer event"
    except httpx.HTTPError as exc:
        ok, status = False, type(exc).__name__
    elapsed = (time.perf_counter() - started) * 1e3
    if ok:
        rec.latencies_ms.append(elapsed)
    else:
        rec.errors[status] += 1


async def _client(
    base: str,
    headers: dict[str, str],
    *,
    deadline: float,
    routes: list[str],
    weights: list[float],
    collection: str | None,
    records: dict[str, Route],
    seed: int,
) -> None:
    rng = random.Random(seed)
    questions = itertools.cycle(rng.sample(QUESTIONS, len(QUESTIONS)))
    # One connection per client; TCP_NODELAY, or the request body, written after its
    # headers, waits for a delayed ACK (~40 ms on loopback) and every latency measures that.
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, transport=transport
    ) as client:
        while time.perf_counter() < deadline:
            route = rng.choices(routes, weights)[0]
            await _one(client, route, next(questions), collection, records[route])


async def run(
    base: str,
    *,
    clients: int,
    seconds: float,
    mix: dict[str, float],
    collection: str | None,
    api_key: str | None,
) -> tuple[dict[str, Route], float]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    routes = [r for r, w in mix.items() if w > 0]
    weights = [mix[r] for r in routes]
    records = {r: Route(r) for r in routes}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _client(
                base,
                headers,
                deadline=deadline,
                routes=routes,
                weights=weights,
                collection=collection,
                records=records,
                seed=i,
            )
            for i in range(clients)
        )
    )
    return records, time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(title: str, records: dict[str, Route], wall_s: float) -> float:
    print(f"\n{title} ({wall_s:.1f} s)")
    head = f"{'route':<8}{'ok':>7}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(head + f"{'first event p50':>17}")
    everything: list[float] = []
    errors = 0
    for rec in records.values():
        everything += rec.latencies_ms
        n_err = sum(rec.errors.values())
        errors += n_err
        first = f"{_pct(rec.first_event_ms, 50):>17.1f}" if rec.first_event_ms else ""
        print(
            f"{rec.name:<8}{len(rec.latencies_ms):>7}{n_err:>8}"
            f"{len(rec.latencies_ms) / wall_s:>8.1f}{_pct(rec.latencies_ms, 50):>9.1f}"
            f"{_pct(rec.latencies_ms, 95):>9.1f}{_pct(rec.latencies_ms, 99):>9.1f}{first}"
        )
        for status, n in sorted(rec.errors.items()):
            print(f"  {rec.name} errors: {n} x {status}")
    throughput = len(everything) / wall_s
    p50, p99 = _pct(everything, 50), _pct(everything, 99)
    print(
        f"{'all':<8}{len(everything):>7}{errors:>8}{throughput:>8.1f}{p50:>9.1f}"
        f"{_pct(everything, 95):>9.1f}{p99:>9.1f}"
    )
    print(f"p99/p50 = {p99 / p50:.2f}" if everything else "no request succeeded")
    return throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    parser.add_argument("--clients", type=int, default=20, help=f"1 to {MAX_CLIENTS}")
    parser.add_argument("--seconds", type=float, default=60, help=f"up to {MAX_SECONDS}")
    parser.add_argument(
        "--mix",
        type=_parse_mix,
        default=_parse_mix("search=1,ask=1"),
        help="routes and weights, e.g. search=1,ask=1,chat=1 (default search=1,ask=1)",
    )
    parser.add_argument("--collection", help="collection (default: the service's own)")
    parser.add_argument(
        "--api-key", default=os.environ.get("MMRAG_API_KEY"), help="or MMRAG_API_KEY"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="first run one client alone, then compare"
    )
    args = parser.parse_args(argv)
    if not _loopback(args.url):
        parser.error(f"{args.url} is not a loopback address: this benchmark drives local services")
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--clients must be 1-{MAX_CLIENTS} and --seconds 0-{MAX_SECONDS}")
    try:
        httpx.get(f"{args.url}/ready", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"the service at {args.url} is not ready: {exc}", file=sys.stderr)
        return 2
    options = {
        "mix": args.mix,
        "collection": args.collection,
        "api_key": args.api_key,
    }
    print(f"{args.url}: mix {args.mix}")
    single = None
    if args.baseline:
        records, wall = asyncio.run(
            run(args.url, clients=1, seconds=min(args.seconds, 20), **options)
        )
        single = report("1 client", records, wall)
    records, wall = asyncio.run(
        run(args.url, clients=args.clients, seconds=args.seconds, **options)
    )
    many = report(f"{args.clients} clients", records, wall)
    if single:
        print(f"\nthroughput: {many / single:.2f}x one client's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
