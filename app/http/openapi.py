"""What the OpenAPI document says beyond what Litestar infers from the handlers.

Litestar documents parameters and success bodies from the signatures. What it cannot see, the
routes name with the helpers here:

- request bodies the controllers decode themselves (app/http/bodies.py):
  ``operation_class=JsonBodyOperation.of(SomeRequest)``, or ``SearchOperation`` (JSON or a
  multipart image); the schemas come from the msgspec wire types, ``top_k`` capped at the
  service's ``retrieval.max_top_k``;
- errors, all ``application/problem+json`` ``ProblemDetails`` (app/http/problems.py):
  ``responses=problem_responses(400, 404, ...)``, the codes the route can really return; every
  operation class drops Litestar's own ``application/json`` 400, which the service never sends;
- file downloads (``FileOperation``; ``AnyFileOperation`` for a file of any media type);
- with API keys configured, the 401 of every route but ``auth.PUBLIC_PATHS``.

``openapi_config(settings)`` builds the config that puts it together. May import litestar,
msgspec, app.settings and app.http (bodies, problems, schemas, auth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgspec
from litestar.exceptions import ImproperlyConfiguredException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    Encoding,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from app.http.auth import PUBLIC_PATHS
from app.http.bodies import JSON, MULTIPART
from app.http.problems import PROBLEM_JSON, title
from app.http.schemas import (
    AskRequest,
    Filters,
    ImageSearchForm,
    IngestPathsRequest,
    ProblemDetails,
    SearchRequest,
)
from app.settings import Settings

_REF = "#/components/schemas/{name}"
IMAGE_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"
EVENT_STREAM = "text/event-stream"
IMAGE_SEARCH_UPLOAD = "ImageSearchUpload"
INGEST_UPLOAD = "IngestUpload"
# Comma-separated tags, as many and as long as a JSON body may send (32 of 128 characters).
TAGS_FIELD_PATTERN = r"^[^,]{0,128}(,[^,]{0,128}){0,31}$"


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The error responses of a route: each a ``ProblemDetails`` as problem+json."""
    return {
        code: ResponseSpec(
            data_container=ProblemDetails,
            media_type=PROBLEM_JSON,
            description=title(code),
            generate_examples=False,
        )
        for code in codes
    }


def _ref(name: str) -> Reference:
    return Reference(ref=_REF.format(name=name))


@dataclass
class DocumentedOperation(Operation):
    """An operation that lists only the errors its route declares, each as problem+json.

    Litestar adds a 400 of its own ``application/json`` shape to every route with parameters;
    the service never sends that shape, so it goes.
    """

    def __post_init__(self) -> None:
        self.responses = {
            code: response
            for code, response in sorted((self.responses or {}).items())
            if code < "400" or _is_problem(response)
        }


def _is_problem(response: OpenAPIResponse | Reference) -> bool:
    return isinstance(response, OpenAPIResponse) and PROBLEM_JSON in (response.content or {})


@dataclass
class JsonBodyOperation(DocumentedOperation):
    """A route whose body is one JSON object of ``request_type``, read by ``bodies.json_body``;
    with ``streams``, it may answer with server-sent events instead of JSON.

    The request type's schema joins the document's components (see ``_Document``).
    """

    request_type: ClassVar[type[msgspec.Struct] | None] = None
    streams: ClassVar[bool] = False

    @classmethod
    def of(
        cls, request_type: type[msgspec.Struct], *, streams: bool = False
    ) -> type[JsonBodyOperation]:
        attributes = {"request_type": request_type, "streams": streams}
        return type(f"{request_type.__name__}Operation", (cls,), attributes)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.request_type is not None:
            schema = _ref(self.request_type.__name__)
            self.request_body = RequestBody(
                required=True, content={JSON: OpenAPIMediaType(schema=schema)}
            )
        ok = (self.responses or {}).get("200")
        if self.streams and isinstance(ok, OpenAPIResponse):
            content = dict(ok.content or {})
            json_answer = content.get(JSON)
            if json_answer is not None and isinstance(json_answer.schema, Schema):
                # ``Answer | ServerSentEvent`` comes out as oneOf [Answer, {}], which nothing
                # fits; the JSON answer is the Answer alone, the events have their own type.
                kept = [s for s in json_answer.schema.one_of or [] if _says_something(s)]
                if len(kept) == 1:
                    json_answer.schema = kept[0]
            events = Schema(
                description=(
                    'Server-sent events (with `"stream": true`). Ours: `hits` (the search '
                    'response), then `delta`s (`{"text"}`), then `answer` (the JSON answer '
                    "above), or one `error` (problem details) if it fails after the first event. "
                    "On /v1/chat/completions: OpenAI chat completion chunks, then `[DONE]`."
                )
            )
            ok.content = {**content, EVENT_STREAM: OpenAPIMediaType(schema=events)}


def _says_something(schema: Schema | Reference) -> bool:
    return isinstance(schema, Reference) or bool(schema.to_schema())


@dataclass
class SearchOperation(JsonBodyOperation):
    """``POST /v1/search``: a JSON text query, or a multipart image query."""

    request_type = SearchRequest

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = RequestBody(
            required=True,
            description=(
                "A text query as JSON, or an image query as multipart/form-data with an "
                "'image' file and optional fields."
            ),
            content={
                JSON: OpenAPIMediaType(schema=_ref(SearchRequest.__name__)),
                MULTIPART: OpenAPIMediaType(
                    schema=_ref(IMAGE_SEARCH_UPLOAD),
                    encoding={"image": Encoding(content_type=IMAGE_TYPES)},
                ),
            },
        )


AskOperation = JsonBodyOperation.of(AskRequest)


@dataclass
class IngestOperation(JsonBodyOperation):
    """``POST /v1/ingest``: paths on the server as JSON, or files as multipart."""

    request_type = IngestPathsRequest

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = RequestBody(
            required=True,
            description=(
                "Files to upload as multipart/form-data (repeat 'files' once per file), or, as "
                "JSON, files and folders the service reads itself (under its ingest roots)."
            ),
            content={
                JSON: OpenAPIMediaType(schema=_ref(IngestPathsRequest.__name__)),
                MULTIPART: OpenAPIMediaType(schema=_ref(INGEST_UPLOAD)),
            },
        )


@dataclass
class FileOperation(DocumentedOperation):
    """A file download. Litestar documents ``last-modified`` as an RFC 3339 ``date-time``; it
    is an HTTP-date ("Fri, 27 Nov 2026 21:53:56 GMT")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.headers and "last-modified" in ok.headers:
            ok.headers["last-modified"] = OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING),
                description="When the file last changed, as an HTTP-date (RFC 9110).",
            )


@dataclass
class AnyFileOperation(FileOperation):
    """A file served with its own media type (the asset's ``mime``), whatever that is."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
            text = Schema(type=OpenAPIType.STRING)
            headers = {
                "last-modified": OpenAPIHeader(
                    schema=text, description="When the file last changed, as an HTTP-date."
                ),
                "accept-ranges": OpenAPIHeader(schema=text, description="bytes"),
                "content-length": OpenAPIHeader(schema=text, description="Bytes in the body."),
            }
            ok.content = {"*/*": OpenAPIMediaType(schema=binary)}
            ok.description = "The ingested file, with the media type it was ingested with."
            ok.headers = dict(headers)
            range_header = OpenAPIHeader(schema=text, description="bytes first-last/size")
            part = OpenAPIResponse(
                description="The bytes a `Range: bytes=a-b` header asked for (Content-Range).",
                content={"*/*": OpenAPIMediaType(schema=binary)},
                headers={**headers, "content-range": range_header},
            )
            self.responses = dict(sorted({**(self.responses or {}), "206": part}.items()))


# -- components the handlers cannot register -----------------------------------------------


def request_schemas(
    types: Sequence[type[msgspec.Struct]],
    max_top_k: int,
    *,
    image_upload: bool,
    ingest_upload: bool = False,
) -> dict[str, Any]:
    """Component schemas of the request bodies, from the msgspec wire types; with
    ``image_upload``, the multipart image search too, with ``ingest_upload`` the multipart
    ingest upload."""
    form_types: list[type[msgspec.Struct]] = [ImageSearchForm] if image_upload else []
    _, components = msgspec.json.schema_components([*types, *form_types], ref_template=_REF)
    for component in components.values():
        if "top_k" in component.get("properties", {}):
            _cap_top_k(component["properties"]["top_k"], max_top_k)
    if image_upload:
        components[IMAGE_SEARCH_UPLOAD] = _image_upload(components.pop(ImageSearchForm.__name__))
    if ingest_upload:
        components[INGEST_UPLOAD] = _ingest_upload()
    return components


def _ingest_upload() -> dict[str, Any]:
    paths = msgspec.json.schema_components([IngestPathsRequest], ref_template=_REF)[1]
    collection = paths[IngestPathsRequest.__name__]["properties"]["collection"]
    return {
        "title": INGEST_UPLOAD,
        "description": (
            "Files to ingest, each a 'files' part with its file name (a relative folder in the "
            "name is kept: 'animals/cat.jpg'). GET /v1/ingest/limits says how many files and "
            "bytes one upload may carry (413 beyond)."
        ),
        "type": "object",
        "properties": {
            "files": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "minItems": 1,
                "description": "The files: photos, documents, PDFs, videos, recordings.",
            },
            "collection": _not_null(collection),
            "tags": {
                "type": "string",
                "pattern": TAGS_FIELD_PATTERN,
                "description": "Comma-separated tags for every file: 'trip,2024'.",
            },
        },
        "required": ["files"],
        "additionalProperties": False,
    }


def _image_upload(form_schema: dict[str, Any]) -> dict[str, Any]:
    form = form_schema["properties"]
    filters = msgspec.json.schema_components([Filters], ref_template=_REF)[1]["Filters"]
    filter_fields = filters["properties"]
    upload = {
        "image": {
            "type": "string",
            "format": "binary",
            "description": f"The query image ({IMAGE_TYPES}).",
        },
        "top_k": _not_null(form["top_k"]),
        "collection": _not_null(form["collection"]),
        "source_prefix": _not_null(filter_fields["source_prefix"]),
        **{name: _seconds(name) for name in ("start_s", "end_s")},
        "tags": _no_default(filter_fields["tags"]),
        "modalities": _no_default(filter_fields["modalities"]),
    }
    return {
        "title": IMAGE_SEARCH_UPLOAD,
        "description": "An image query. A list is its field repeated, one item per part.",
        "type": "object",
        "properties": upload,
        "required": ["image"],
        "additionalProperties": False,
    }


def _seconds(name: str) -> dict[str, Any]:
    edge = "start" if name == "start_s" else "end"
    return {
        "type": "number",
        "minimum": 0,
        "maximum": 1e7,
        "description": (
            f"The {edge} of a time range in seconds (filters.time_range.{name}): only segments "
            "of videos and recordings that overlap it match."
        ),
    }


def _cap_top_k(schema: dict[str, Any], max_top_k: int) -> None:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            option["maximum"] = min(option.get("maximum", max_top_k), max_top_k)
            option["description"] = (
                f'{option.get("description", "")} A JSON integer literal (5, not 5.0 or "5"), '
                f"at most {max_top_k} here (retrieval.max_top_k)."
            ).strip()


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    (only,) = options
    return dict(only)


def _no_default(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "default"}


# -- the document ---------------------------------------------------------------------------


@dataclass
class _Document(OpenAPI):
    """Litestar's document plus what no handler signature says: the component schemas of the
    request bodies of ``JsonBodyOperation`` routes (Litestar replaces ``components.schemas``
    with the ones it generated, so these are added when the document is rendered) and, when
    API keys guard the service, the 401 answer of every route outside ``auth.PUBLIC_PATHS``."""

    max_top_k: int = 100
    guarded: bool = False

    @property
    def _exclude_fields(self) -> set[str]:
        return {"max_top_k", "guarded"}

    def to_schema(self) -> dict[str, Any]:
        document = super().to_schema()
        operations = [
            operation
            for item in (self.paths or {}).values()
            for operation in (getattr(item, f.name) for f in fields(item))
            if isinstance(operation, JsonBodyOperation)
        ]
        types = list(dict.fromkeys(op.request_type for op in operations if op.request_type))
        extra = request_schemas(
            types,
            self.max_top_k,
            image_upload=any(isinstance(op, SearchOperation) for op in operations),
            ingest_upload=any(isinstance(op, IngestOperation) for op in operations),
        )
        components = document.setdefault("components", {})
        schemas: dict[str, Any] = components.setdefault("schemas", {})
        clash = sorted(
            name for name in schemas.keys() & extra.keys() if schemas[name] != extra[name]
        )
        if clash:
            msg = f"OpenAPI component names generated twice, differently: {clash}"
            raise ImproperlyConfiguredException(msg)
        components["schemas"] = dict(sorted({**schemas, **extra}.items()))
        if self.guarded:
            _document_api_keys(document)
        return document


def _document_api_keys(document: dict[str, Any]) -> None:
    unauthorized = {
        "description": title(401),
        "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(name="ProblemDetails")}}},
    }
    for path, item in document.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path in PUBLIC_PATHS:
                operation["security"] = []  # open to all, keys or not
            else:
                operation["responses"]["401"] = dict(unauthorized)
                operation["responses"] = dict(sorted(operation["responses"].items()))


_SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(type="http", scheme="bearer", description="An API key."),
    "apiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key."
    ),
}


@dataclass
class _Config(OpenAPIConfig):
    max_top_k: int = 100
    guarded: bool = False

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        values = {f.name: getattr(base, f.name) for f in fields(base) if f.init}
        return _Document(**values, max_top_k=self.max_top_k, guarded=self.guarded)


def openapi_config(settings: Settings) -> OpenAPIConfig:
    guarded = bool(settings.http.api_keys)
    return _Config(
        title="mmrag",
        version="0.1.0",
        description="Multimodal retrieval and grounded answers over your media.",
        path="/schema",
        components=Components(security_schemes=_SECURITY_SCHEMES if guarded else None),
        security=[{"bearer": []}, {"apiKey": []}] if guarded else None,
        max_top_k=settings.retrieval.max_top_k,
        guarded=guarded,
    )


__all__ = [
    "AnyFileOperation",
    "AskOperation",
    "DocumentedOperation",
    "FileOperation",
    "IngestOperation",
    "JsonBodyOperation",
    "SearchOperation",
    "openapi_config",
    "problem_responses",
    "request_schemas",
]
