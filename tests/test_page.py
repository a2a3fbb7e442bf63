"""The chat page as the service serves it: ``/`` and ``/static/…``, public even when the API
wants a key, self-contained (nothing from elsewhere), out of the OpenAPI document, and shipped
in the package. What it does in a browser: tests/test_browser.py."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from app.http.app import create_app
from app.http.page import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.conftest import make_settings
from tests.test_ingest_api import KEY

Client = TestClient[Any]
ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(path.name for path in STATIC_DIR.iterdir())


# No lifespan (no models, no store): the page needs neither, and the key check comes first.
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    return TestClient(app=create_app(make_settings(tmp_path_factory.mktemp("page"))))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Client:
    settings = make_settings(tmp_path_factory.mktemp("page-keyed"), http={"api_keys": KEY})
    return TestClient(app=create_app(settings))


def test_the_page_is_served_at_the_root(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == (STATIC_DIR / "index.html").read_text()
    assert '<script type="module" src="/static/app.js"></script>' in response.text
    assert 'role="log" aria-live="polite"' in response.text  # answers are announced


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("cards.js", "text/javascript"),
        ("app.css", "text/css"),
    ],
)
def test_its_files_are_served_under_static(client: Client, name: str, media_type: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["last-modified"]  # a reload revalidates instead of downloading
    assert response.content == (STATIC_DIR / name).read_bytes()


def test_every_file_the_page_refers_to_is_there(client: Client) -> None:
    """The HTML's links and each module's imports, followed: none is missing, none is extra."""
    html = (STATIC_DIR / "index.html").read_text()
    referred = set(re.findall(r'(?:src|href)="/static/([^"]+)"', html))
    for module in STATIC_DIR.glob("*.js"):
        referred |= set(re.findall(r'from "\./([^"]+)"', module.read_text()))
    assert referred == set(FILES) - {"index.html"}
    for name in referred:
        assert client.get(f"/static/{name}").status_code == 200


def test_nothing_is_loaded_from_elsewhere() -> None:
    """Offline: no CDN, no web font, no absolute URL in any of the page's files."""
    for name in FILES:
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|@font-face", text), name
    for module in STATIC_DIR.glob("*.js"):
        # The DOM is built from text only: what the service returns is never parsed as HTML.
        html_sinks = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write"
        assert not re.search(html_sinks, module.read_text()), module.name


def test_a_missing_or_outside_file_is_a_404_problem(client: Client) -> None:
    for path in ("/static/nope.js", "/static/../page.py", "/static/%2e%2e/page.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")


def test_the_page_needs_no_key_but_the_api_does(keyed: Client) -> None:
    """The page must load before anyone typed a key; it holds no data. Everything it asks of
    the API then carries the key."""
    assert keyed.get("/").status_code == 200
    assert keyed.get("/static/app.js").status_code == 200
    for path in ("/v1/models", "/v1/ingest/limits", "/schema/openapi.json"):
        refused = keyed.get(path)
        assert refused.status_code == 401, path
        assert "API key is required" in refused.json()["detail"]
    # Paths that only look like the page's lead nowhere without a key.
    for path in ("/static/../v1/models", "/static/%2e%2e/v1/models", "/staticx/app.js"):
        assert keyed.get(path).status_code in {401, 404}, path


def test_the_page_stays_out_of_the_api_document(keyed: Client) -> None:
    schema = keyed.get("/schema/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    paths = set(schema.json()["paths"])
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)


def test_the_page_ships_in_the_package() -> None:
    """Installed copies (wheels, the container) serve the page from the package itself."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["app.http"]
    assert STATIC_DIR == ROOT / "app" / "http" / "static"
    for name in FILES:
        assert any(fnmatch(f"static/{name}", p) for p in patterns), name
