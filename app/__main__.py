"""``python -m app``: serve the HTTP API (host, port and data dir from settings)."""

from __future__ import annotations

import logging
import os
import sys

from app.core.errors import MMRagError


def main() -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn
    from pydantic import ValidationError

    from app.http.app import create_app
    from app.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings (MMRAG_* environment or .env): {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app(settings)
    except MMRagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
