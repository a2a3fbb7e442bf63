"""Schemathesis over the app's own OpenAPI document, in process (ASGI), with every check.

Each operation gets the coverage phase (boundary and invalid values of every constraint) and a
bounded number of generated cases, valid and invalid. A failure is a 5xx, an undocumented status
or media type, a body that breaks its documented schema, valid data refused or invalid data
accepted. The seed is fixed, so a run is the same run every time.

The document is read from an app built at import time (pytest collects one test per operation);
the app under test serves the same document, which the fixture checks, on a small ingested
library, with its lifespan running (models loaded, store open).
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import strategies as st
from litestar import Litestar
from PIL import Image
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.http.app import Models, create_app
from app.http.bodies import FORM_LISTS
from app.http.ingest import FILES_FIELD
from tests.conftest import CAT_FILES, copy_sample, make_settings
from tests.test_http import ingest_into

MAX_EXAMPLES = 100  # generated cases per operation in the fuzzing phase
SEED = 20250101


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        document: dict[str, Any] = create_app(make_settings(Path(tmp))).openapi_schema.to_schema()
    return document


DOCUMENT = _document()
CONFIG = schemathesis.Config.from_dict(
    {"seed": SEED, "generation": {"max-examples": MAX_EXAMPLES, "database": "none"}}
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
MULTIPART = "multipart/form-data"


def _form_validator(path: str) -> Any:
    return jsonschema_rs.validator_for(
        {
            **DOCUMENT["paths"][path]["post"]["requestBody"]["content"][MULTIPART]["schema"],
            "components": DOCUMENT["components"],
        }
    )


# The multipart routes: the validator of their form, and the fields that are lists (repeated).
FORMS = {
    "/v1/search": (_form_validator("/v1/search"), FORM_LISTS),
    "/v1/ingest": (_form_validator("/v1/ingest"), (FILES_FIELD,)),
}


def whole_numbers_as_integers(value: Any) -> Any:
    """JSON Schema counts 20.0 as an integer, and Schemathesis sends it so; the service takes only
    the literal 20, as the issue asked and the document's ``top_k`` description says
    (tests/test_http_contract.py checks the 422). Send what a client would."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers_as_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers_as_integers(v) for v in value]
    return value


NUMBER = r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?"


def ranges_in_order(body: Any) -> Any:
    """A time range whose start is after its end is schema-valid (JSON Schema cannot compare two
    fields) and refused with a 422 that tests/test_media_ingestion.py checks. Send it in order,
    in a JSON body (``filters.time_range``) or a form (``start_s``, ``end_s``)."""
    if isinstance(body, dict) and "image" in body:
        start, end = body.get("start_s"), body.get("end_s")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
            body["start_s"], body["end_s"] = end, start
        return body
    filters = body.get("filters") if isinstance(body, dict) else None
    span = filters.get("time_range") if isinstance(filters, dict) else None
    if isinstance(span, dict):
        start, end = span.get("start_s"), span.get("end_s")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
            span["start_s"], span["end_s"] = end, start
    return body


def _tiny_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 120, 40)).save(buffer, fmt)
    return buffer.getvalue()


# JSON Schema cannot say "a decodable image", and random bytes are a 415 (tests/test_http.py
# checks that): the ``image`` part is a real picture in each format the document names.
for _media_type, _format in {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}.items():
    schemathesis.openapi.media_type(_media_type, st.just(_tiny_image(_format)))


@pytest.fixture(scope="module")
def served(
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    sample_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Litestar]:
    """The app on a small ingested library, lifespan running; every call (and every re-sent
    one a check makes) reaches it in process."""
    library = copy_sample(sample_library, tmp_path_factory.mktemp("fuzz-library"), CAT_FILES)
    data = tmp_path_factory.mktemp("fuzz-data")
    models = Models(clip=clip, text=text_model)
    ingest_into(make_settings(data), models, library)
    app = create_app(make_settings(data), models=models)
    try:
        with asgi.get_client(app) as client:  # starts the lifespan; shutdown_lifespans() ends it
            assert client.get("/ready").json() == {"status": "ready"}
            assert client.get("/schema/openapi.json").json() == DOCUMENT
        yield app
    finally:
        asgi.shutdown_lifespans()


def form_as_sent_is_valid(response: schemathesis.Response) -> bool:
    """Whether the multipart body as sent, read field by field as text, fits the document.

    Schemathesis reads a negative form case back the same way before it blames the server, but
    holds the file part's bytes against ``type: string`` and so never clears a form with a file:
    a boolean ``false`` sent as the text "false" is a fine ``source_prefix``, yet reported.
    """
    validator, lists = FORMS[urlsplit(str(response.request.url)).path]
    content_type = response.request.headers["Content-Type"]
    body = response.request.body
    assert isinstance(body, bytes)
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, list[Any]] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        text = "<file>" if part.get_filename() else payload.decode(errors="replace")
        name = part.get_param("name", header="content-disposition")
        fields.setdefault(str(name), []).append(text)
    form: dict[str, Any] = {}
    for name, values in fields.items():
        single = values[0] if len(values) == 1 else values
        form[name] = values if name in lists else single
    if isinstance(top_k := form.get("top_k"), str) and re.fullmatch(r"-?[0-9]{1,20}", top_k):
        form["top_k"] = int(top_k)
    for name in ("start_s", "end_s"):  # read as numbers when they are, as the service does
        value = form.get(name)
        if isinstance(value, str) and re.fullmatch(NUMBER, value):
            form[name] = float(value)
    return bool(validator.is_valid(form))


@schema.parametrize()
def test_api(case: schemathesis.Case, served: Litestar) -> None:
    if case.media_type == "application/json":
        case.body = ranges_in_order(whole_numbers_as_integers(case.body))
    elif case.media_type == MULTIPART:
        case.body = ranges_in_order(case.body)
    response = case.call(app=served)
    # 503 is documented, but here it would mean the lifespan is not running: nothing was tested.
    assert response.status_code != 503, response.text
    excluded = []
    if (
        case.media_type == MULTIPART
        and response.status_code < 300
        and form_as_sent_is_valid(response)
    ):
        excluded.append(negative_data_rejection)
    # Checks that send requests of their own send them to the same app.
    case.validate_response(response, excluded_checks=excluded, transport_kwargs={"app": served})


def test_success_responses_fit_the_document(served: Litestar) -> None:
    """Generated ids are never real, so the routes' 200s are checked here on real ones."""
    search = schema["/v1/search"]["POST"].Case(
        body={"query": "cat", "top_k": 5}, media_type="application/json"
    )
    hits = search.call_and_validate(app=served).json()["hits"]
    assert {Path(h["source"]).name for h in hits} == {"chelsea.jpg", "cat-care.txt"}
    cases = [schema["/v1/collections/{name}"]["GET"].Case(path_parameters={"name": "default"})]
    for hit in hits:
        for path in ("/v1/assets/{asset_id}", "/v1/assets/{asset_id}/content"):
            cases.append(schema[path]["GET"].Case(path_parameters={"asset_id": hit["asset_id"]}))
        if hit["thumbnail_url"]:
            thumbnail = schema["/v1/assets/{asset_id}/thumbnail"]["GET"]
            cases.append(thumbnail.Case(path_parameters={"asset_id": hit["asset_id"]}))
    statuses = [case.call_and_validate(app=served).status_code for case in cases]
    assert statuses == [200] * len(cases)
    assert len(cases) == 6
