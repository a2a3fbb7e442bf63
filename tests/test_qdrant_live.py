"""The store contract (``tests/test_store_contract.py``) against a real Qdrant server.

Set ``QDRANT_URL`` (and ``QDRANT_API_KEY`` when the server wants one) to run it; each test works
in collections of its own, named ``mmrag-test-<random>-...``, and deletes them afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.store_fixtures import LIVE_SKIP, Backend, live_backend
from tests.test_store_contract import *  # noqa: F403  (its tests, collected again here)

pytestmark = [
    pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason=LIVE_SKIP),
    # A server on plain HTTP with a key: qdrant-client rightly warns; the test goes on.
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
]


@pytest.fixture
def backend() -> Iterator[Backend]:
    with live_backend() as live:
        yield live
