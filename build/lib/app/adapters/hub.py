"""Model-hub reachability, checked in seconds so a missing network fails fast and clearly.

Without this, huggingface_hub retries for ~40 s before giving up. When the hub is unreachable
(or ``HF_HUB_OFFLINE`` is set), loaders run with the hub's offline switch on, so weights
already in the local cache still load and anything else fails at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

_DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", _DEFAULT_ENDPOINT)


def hub_reachable(timeout_s: float) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(*, offline: bool) -> Iterator[None]:
    """Turn huggingface_hub's offline switch on for the duration (it is read at call time)."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hf_constants

    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous
