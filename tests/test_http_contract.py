"""The HTTP contract: one way to read bodies, problem details for every error, and an OpenAPI
document that says what the service really accepts and answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar, Request, post
from litestar.response import ServerSentEvent
from litestar.testing import TestClient

from app.http.app import Models, create_app
from app.http.bodies import FORM_FIELDS, json_body
from app.http.openapi import JsonBodyOperation, openapi_config, problem_responses
from app.http.schemas import HealthOut, TopK
from tests.conftest import CAT_FILES, copy_sample, make_settings
from tests.test_http import ingest_into, problem_of

Client = TestClient[Any]
JSON_ROUTES = [("/v1/search", "query"), ("/v1/ask", "question")]
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


@pytest.fixture(scope="module")
def data_dir(
    models: Models, sample_library: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    library = copy_sample(sample_library, tmp_path_factory.mktemp("contract-library"), CAT_FILES)
    data = tmp_path_factory.mktemp("contract-data")
    ingest_into(make_settings(data), models, library)
    return data


@pytest.fixture(scope="module")
def client(data_dir: Path, models: Models) -> Iterator[Client]:
    with TestClient(app=create_app(make_settings(data_dir), models=models)) as c:
        yield c


@pytest.fixture(scope="module")
def document(client: Client) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def post_raw(client: Client, path: str, content: bytes, content_type: str | None = None) -> Any:
    headers = {"content-type": content_type or "application/json"}
    return client.post(path, content=content, headers=headers)


def photo_bytes(sample_library: Path) -> bytes:
    return (sample_library / "photos" / "animals" / "chelsea.jpg").read_bytes()


# -- bodies that used to answer 500 -------------------------------------------------------------


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_invalid_utf8_is_a_400_naming_the_byte(client: Client, path: str, required: str) -> None:
    body = problem_of(post_raw(client, path, b'{"' + required.encode() + b'":"caf\xe9"}'), 400)
    assert body["title"] == HTTPStatus(400).phrase
    assert body["type"] == "/problems/bad-request"
    assert body["instance"] == path
    assert "not valid UTF-8" in body["detail"]
    assert "0xe9" in body["detail"]


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_deeply_nested_json_is_a_400(client: Client, path: str, required: str) -> None:
    deep = b"[" * 2000 + b"]" * 2000
    for raw in (
        deep,
        b'{"' + required.encode() + b'":' + deep + b"}",
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ):
        body = problem_of(post_raw(client, path, raw), 400)
        assert "nested more than 32 levels deep" in body["detail"]


# -- one validation behaviour for both JSON routes ---------------------------------------------


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_json_routes_need_application_json(
    client: Client, path: str, required: str, content_type: str
) -> None:
    raw = json.dumps({required: "a ginger cat"}).encode()
    response = client.post(path, content=raw, headers={"content-type": content_type})
    body = problem_of(response, 415)
    assert body["type"] == "/problems/unsupported-media-type"
    assert "application/json" in body["detail"]
    assert (content_type or "no content type") in body["detail"]


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
@pytest.mark.parametrize("top_k", ["5", 5.0, True])
def test_top_k_must_be_a_json_integer(
    client: Client, path: str, required: str, top_k: object
) -> None:
    response = client.post(path, json={required: "a ginger cat", "top_k": top_k})
    body = problem_of(response, 422)
    assert body["field"] == "top_k"
    assert body["detail"].startswith("top_k: Expected `int")
    assert body["type"] == "/problems/invalid-field"


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_an_empty_body_names_the_required_field(
    client: Client, path: str, required: str, raw: bytes
) -> None:
    body = problem_of(post_raw(client, path, raw), 400)
    assert body["detail"] == f"the body is empty; send a JSON object with the field '{required}'"


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_a_body_that_is_not_an_object_says_so(client: Client, path: str, required: str) -> None:
    body = problem_of(client.post(path, json=["a ginger cat"]), 400)
    assert body["detail"].startswith(f"the body must be a JSON object with the field '{required}'")


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_a_lone_surrogate_is_named(client: Client, path: str, required: str) -> None:
    raw = b'{"' + required.encode() + b'": "x\\ud800y"}'
    body = problem_of(post_raw(client, path, raw), 400)
    assert body["detail"].startswith(f"{required} holds a lone UTF-16 surrogate escape")
    assert "Input data was truncated" not in body["detail"]
    raw = b'{"' + required.encode() + b'": "x", "filters": {"tags": ["\\udc00"]}}'
    body = problem_of(post_raw(client, path, raw), 400)
    assert body["detail"].startswith("filters.tags[0] holds a lone UTF-16 surrogate")


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_malformed_json_says_where(client: Client, path: str, required: str) -> None:
    body = problem_of(post_raw(client, path, b'{"' + required.encode() + b'": '), 400)
    assert body["detail"].startswith("the body is not valid JSON: Expecting value")
    assert "(line 1, column" in body["detail"]
    body = problem_of(post_raw(client, path, b'{"' + required.encode() + b'": NaN}'), 400)
    assert body["detail"] == "the body is not valid JSON: NaN is not a JSON value"


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({}, "question", "is required"),
        ({"question": "x", "surprise": 1}, "surprise", "is not a known field"),
        ({"question": "x", "filters": {"colour": "red"}}, "filters.colour", "is not a known field"),
        ({"question": "x", "filters": {"modalities": ["sculpture"]}}, "filters.modalities[0]", ""),
        ({"question": ""}, "question", "Expected `str` of length >= 1"),
    ],
)
def test_field_errors_are_422_naming_the_field(
    client: Client, payload: dict[str, Any], field: str, reason: str
) -> None:
    body = problem_of(client.post("/v1/ask", json=payload), 422)
    assert body["field"] == field
    assert body["detail"].startswith(f"{field}: {reason}")


def test_top_k_over_the_configured_maximum_names_the_setting(client: Client) -> None:
    body = problem_of(client.post("/v1/ask", json={"question": "x", "top_k": 51}), 422)
    assert body["field"] == "top_k"
    assert "retrieval.max_top_k" in body["detail"]


def test_a_valid_ask_still_answers(client: Client) -> None:
    response = client.post("/v1/ask", json={"question": "How much dry food does Chelsea eat?"})
    assert response.status_code == 200, response.text
    assert response.json()["citations"][0]["source"].endswith("cat-care.txt")


# -- multipart ----------------------------------------------------------------------------------


def test_too_many_multipart_parts_is_413(client: Client, sample_library: Path) -> None:
    files = [("image", ("c.jpg", photo_bytes(sample_library), "image/jpeg"))]
    files += [("tags", (None, f"t{i}", None)) for i in range(1001)]  # type: ignore[misc]
    body = problem_of(client.post("/v1/search", files=files), 413)
    assert body["type"] == "/problems/payload-too-large"
    assert "at most 1000 parts" in body["detail"]
    assert "Request Entity Too Large" not in body["detail"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"top_k": "5.0"}, "top_k"),
        ({"top_k": ""}, "top_k"),
        ({"top_k": "0"}, "top_k"),
        ({"colour": "red"}, "colour"),
        ({"modalities": "sculpture"}, "modalities"),
        ({"tags": ""}, "tags"),
        ({"source_prefix": ""}, "source_prefix"),
        ({"collection": "a/b"}, "collection"),
    ],
)
def test_multipart_fields_are_checked_like_json(
    client: Client, sample_library: Path, fields: dict[str, str], field: str
) -> None:
    response = client.post(
        "/v1/search",
        files={"image": ("c.jpg", photo_bytes(sample_library), "image/jpeg")},
        data=fields,
    )
    body = problem_of(response, 422)
    assert body["field"] == field
    assert body["detail"].startswith(f"{field}: ")


def test_multipart_needs_exactly_one_image(client: Client, sample_library: Path) -> None:
    photo = ("c.jpg", photo_bytes(sample_library), "image/jpeg")
    body = problem_of(client.post("/v1/search", files=[("image", photo), ("image", photo)]), 422)
    assert body["field"] == "image"
    assert "exactly one 'image' file" in body["detail"]


def test_multipart_list_fields_repeat(client: Client, sample_library: Path) -> None:
    def sources(**fields: Any) -> list[str]:
        response = client.post(
            "/v1/search",
            files={"image": ("c.jpg", photo_bytes(sample_library), "image/jpeg")},
            data={"top_k": "2", **fields},
        )
        assert response.status_code == 200, response.text
        assert response.json()["query_kind"] == "image"
        return [Path(h["source"]).name for h in response.json()["hits"]]

    assert sources(modalities=["text", "image"]) == ["chelsea.jpg"]
    assert sources(modalities=["text"]) == []
    assert sources(tags=["pets", "cats"]) == []  # nothing in this library is tagged


# -- Litestar's own errors keep their headers ---------------------------------------------------


def test_a_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.delete("/v1/search")
    body = problem_of(response, 405)
    assert body["title"] == HTTPStatus(405).phrase
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"POST"}
    response = client.put("/v1/collections/default")
    problem_of(response, 405)
    assert "GET" in response.headers["allow"]


def test_unknown_paths_and_bad_parameters_are_problems(client: Client) -> None:
    body = problem_of(client.get("/v1/nope"), 404)
    assert body["type"] == "about:blank"
    body = problem_of(client.get("/v1/collections/a..b%20c"), 422)
    assert body["field"] == "name"
    body = problem_of(client.get("/v1/assets/" + "0" * 32, params={"collection": "../x"}), 422)
    assert body["field"] == "collection"
    assert body["errors"][0]["key"] == "collection"


@pytest.mark.parametrize("name", ["C%0A", "C%0A%0A", "%0AC"])
def test_a_newline_is_not_part_of_a_collection_name(client: Client, name: str) -> None:
    body = problem_of(client.get(f"/v1/collections/{name}"), 422)
    assert body["field"] == "name"
    body = problem_of(client.get(f"/v1/assets/{'0' * 32}?collection={name}"), 422)
    assert body["field"] == "collection"


# -- the OpenAPI document -----------------------------------------------------------------------

EXPECTED_ERRORS = {
    ("post", "/v1/search"): {"400", "404", "409", "413", "415", "422", "503"},
    ("post", "/v1/ask"): {"400", "404", "409", "413", "415", "422", "429", "502", "503", "504"},
    ("get", "/v1/assets/{asset_id}"): {"404", "409", "422", "503"},
    ("get", "/v1/assets/{asset_id}/content"): {"404", "409", "416", "422", "503"},
    ("get", "/v1/assets/{asset_id}/thumbnail"): {"404", "409", "422", "503"},
    ("get", "/v1/collections/{name}"): {"404", "409", "422", "503"},
    ("get", "/health"): set(),
    ("get", "/ready"): {"503"},
}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_error_is_a_documented_problem(document: dict[str, Any]) -> None:
    seen = {}
    for method, path, operation in operations(document):
        errors = {c: r for c, r in operation["responses"].items() if not c.startswith("2")}
        seen[(method, path)] = set(errors)
        for code, response in errors.items():
            assert response["description"] == HTTPStatus(int(code)).phrase
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
    assert {key: seen.get(key) for key in EXPECTED_ERRORS} == EXPECTED_ERRORS


def test_problem_details_schema(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["ProblemDetails"]
    assert set(schema["required"]) == {"type", "title", "status", "detail", "instance"}
    assert {"field", "errors"} <= set(schema["properties"])
    assert schema.get("additionalProperties", True) is not False


def test_search_documents_both_bodies(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/search"]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/SearchRequest"}
    upload_ref = content["multipart/form-data"]["schema"]["$ref"]
    upload = document["components"]["schemas"][upload_ref.rsplit("/", 1)[-1]]
    assert tuple(upload["properties"]) == FORM_FIELDS
    assert upload["required"] == ["image"]
    assert upload["properties"]["image"] == {
        "type": "string",
        "format": "binary",
        "description": upload["properties"]["image"]["description"],
    }
    assert upload["properties"]["modalities"]["items"] == {"$ref": "#/components/schemas/Modality"}
    assert upload["additionalProperties"] is False
    search = document["components"]["schemas"]["SearchRequest"]
    assert search["required"] == ["query"]
    assert search["properties"]["filters"] == {"$ref": "#/components/schemas/Filters"}
    ask = document["paths"]["/v1/ask"]["post"]["requestBody"]["content"]
    assert ask == {"application/json": {"schema": {"$ref": "#/components/schemas/AskRequest"}}}


def test_success_responses_say_their_media_types(document: dict[str, Any]) -> None:
    paths = document["paths"]
    search = paths["/v1/search"]["post"]["responses"]["200"]["content"]
    assert search == {
        "application/json": {"schema": {"$ref": "#/components/schemas/SearchResponse"}}
    }
    content = paths["/v1/assets/{asset_id}/content"]["get"]["responses"]["200"]["content"]
    assert content == {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    for route in ("content", "thumbnail"):
        headers = paths[f"/v1/assets/{{asset_id}}/{route}"]["get"]["responses"]["200"]["headers"]
        assert headers["last-modified"]["schema"] == {"type": "string"}  # an HTTP-date
    thumb = paths["/v1/assets/{asset_id}/thumbnail"]["get"]["responses"]["200"]["content"]
    assert list(thumb) == ["image/jpeg"]
    assert thumb["image/jpeg"]["schema"]["contentMediaType"] == "image/jpeg"


def test_the_document_caps_top_k_at_the_configured_maximum(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, retrieval={"max_top_k": 7, "default_top_k": 5}))
    schemas = app.openapi_schema.to_schema()["components"]["schemas"]
    for name in ("SearchRequest", "AskRequest"):
        (integer, null) = schemas[name]["properties"]["top_k"]["anyOf"]
        assert (integer["minimum"], integer["maximum"], null) == (1, 7, {"type": "null"})
    assert schemas["ImageSearchUpload"]["properties"]["top_k"]["maximum"] == 7


def test_api_keys_are_documented(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http={"api_keys": ["k" * 32]})
    document = create_app(settings).openapi_schema.to_schema()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for method, path, operation in operations(document):
        if path in ("/health", "/ready"):
            assert operation["security"] == [], (method, path)
            assert "401" not in operation["responses"]
        else:
            unauthorized = operation["responses"]["401"]
            assert unauthorized["content"]["application/problem+json"]["schema"] == PROBLEM_REF


@pytest.mark.parametrize(("path", "required"), JSON_ROUTES)
def test_malformed_json_is_400_even_after_a_field_error(
    client: Client, path: str, required: str
) -> None:
    # Typed decoding meets the unknown field before the truncation; the body is still not JSON.
    body = problem_of(
        post_raw(client, path, b'{"surprise": 1, "' + required.encode() + b'": '), 400
    )
    assert body["detail"].startswith("the body is not valid JSON: Expecting value")


class EchoRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    text: str
    top_k: TopK | None = None


@post(
    "/echo",
    status_code=200,
    operation_class=JsonBodyOperation.of(EchoRequest, streams=True),
    responses=problem_responses(400, 415, 422),
)
async def echo(request: Request[Any, Any, Any]) -> HealthOut | ServerSentEvent:
    return HealthOut(status=(await json_body(request, EchoRequest)).text)


def test_a_json_body_operation_documents_its_body_and_events(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, retrieval={"max_top_k": 9, "default_top_k": 5})
    app = Litestar([echo], openapi_config=openapi_config(settings))
    document = app.openapi_schema.to_schema()
    operation = document["paths"]["/echo"]["post"]
    assert operation["requestBody"] == {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EchoRequest"}}},
        "required": True,
    }
    ok = operation["responses"]["200"]["content"]
    assert ok["application/json"] == {"schema": {"$ref": "#/components/schemas/HealthOut"}}
    assert "server-sent events" in ok["text/event-stream"]["schema"]["description"].lower()
    assert set(operation["responses"]) == {"200", "400", "415", "422"}
    echo_schema = document["components"]["schemas"]["EchoRequest"]
    assert echo_schema["required"] == ["text"]
    assert echo_schema["properties"]["top_k"]["anyOf"][0]["maximum"] == 9
