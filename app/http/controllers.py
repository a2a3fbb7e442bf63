"""Thin controllers: parse the request, call one service method, map the result to a schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import File

from app.core.errors import InvalidFieldError, UnsupportedMediaError
from app.http.schemas import (
    AskRequest,
    AskResponse,
    AssetOut,
    CollectionOut,
    HealthOut,
    ImageSearchForm,
    SearchRequest,
    SearchResponse,
    answer_out,
    asset_out,
    collection_out,
    search_out,
)
from app.http.service import AssetFile, QueryService

AssetId = Annotated[
    str, PathParameter(pattern=r"^[0-9a-f]{32}$", description="Asset id (32 hex characters).")
]
CollectionPath = Annotated[str, PathParameter(description="Collection name.")]
CollectionQuery = Annotated[
    str | None, QueryParameter(description="Collection (default: the service's).")
]


Service = NamedDependency[QueryService]


def provide_service(state: State) -> QueryService:
    service = state.get("service")
    if not isinstance(service, QueryService):
        raise ServiceUnavailableException("the service is still starting")
    return service


def _file(found: AssetFile) -> File:
    return File(
        path=found.path,
        filename=found.filename,
        media_type=found.media_type,
        content_disposition_type="inline",
    )


def _form_list(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [
        v.strip() for item in values if isinstance(item, str) for v in item.split(",") if v.strip()
    ]


def _image_search_form(form: Any) -> tuple[UploadFile | None, ImageSearchForm]:
    """The multipart fields, checked with the same limits as the JSON request."""
    filters: dict[str, Any] = {
        "tags": _form_list(form.getall("tags", [])),
        "modalities": _form_list(form.getall("modalities", [])),
    }
    if form.get("source_prefix"):
        filters["source_prefix"] = form.get("source_prefix")
    fields: dict[str, Any] = {"filters": filters}
    for name in ("top_k", "collection"):
        if form.get(name) not in (None, ""):
            fields[name] = form.get(name)
    upload = form.get("image")
    checked = msgspec.convert(fields, type=ImageSearchForm, strict=False)
    return (upload if isinstance(upload, UploadFile) else None), checked


class SearchController(Controller):
    path = "/v1"
    tags = ["retrieval"]  # noqa: RUF012

    @post("/search", status_code=200, summary="Search the library (text or image query)")
    async def search(self, request: Request[Any, Any, State], service: Service) -> SearchResponse:
        """Send JSON ``{"query": "...", "top_k": 5, "filters": {...}}`` for a text query, or
        ``multipart/form-data`` with an ``image`` file (and optional ``top_k``, ``collection``,
        ``tags``, ``modalities``, ``source_prefix`` fields) to search with an image."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            body = msgspec.json.decode(await request.body(), type=SearchRequest, strict=True)
            name = service.collection_name(body.collection)
            retrieval = await service.search_text(
                body.query, collection=name, top_k=body.top_k, filters=body.filters.to_domain()
            )
            return search_out(retrieval, name)
        if content_type == "multipart/form-data":
            upload, fields = _image_search_form(await request.form())
            if upload is None:
                raise InvalidFieldError("image", "a multipart search needs an 'image' file field")
            name = service.collection_name(fields.collection)
            retrieval = await service.search_image(
                await upload.read(),
                collection=name,
                top_k=fields.top_k,
                filters=fields.filters.to_domain(),
            )
            return search_out(retrieval, name)
        msg = "send application/json (text query) or multipart/form-data (image query)"
        raise UnsupportedMediaError(msg)

    @post("/ask", status_code=200, summary="Answer a question from the library, with citations")
    async def ask(self, data: JSONBody[AskRequest], service: Service) -> AskResponse:
        name = service.collection_name(data.collection)
        answer, retrieval = await service.ask(
            data.question, collection=name, top_k=data.top_k, filters=data.filters.to_domain()
        )
        return answer_out(answer, name, retrieved=len(retrieval.hits))


class AssetController(Controller):
    path = "/v1/assets"
    tags = ["assets"]  # noqa: RUF012

    @get("/{asset_id:str}", summary="An ingested asset's metadata")
    async def get_asset(
        self, asset_id: AssetId, service: Service, collection: CollectionQuery = None
    ) -> AssetOut:
        name = service.collection_name(collection)
        return asset_out(await service.asset(asset_id, collection=name), name)

    @get(
        "/{asset_id:str}/content",
        summary="The ingested file itself",
        media_type="application/octet-stream",
    )
    async def content(
        self, asset_id: AssetId, service: Service, collection: CollectionQuery = None
    ) -> File:
        name = service.collection_name(collection)
        return _file(await service.asset_content(asset_id, collection=name))

    @get(
        "/{asset_id:str}/thumbnail", summary="The asset's thumbnail (JPEG)", media_type="image/jpeg"
    )
    async def thumbnail(
        self, asset_id: AssetId, service: Service, collection: CollectionQuery = None
    ) -> File:
        name = service.collection_name(collection)
        return _file(await service.asset_thumbnail(asset_id, collection=name))


class CollectionController(Controller):
    path = "/v1/collections"
    tags = ["collections"]  # noqa: RUF012

    @get("/{name:str}", summary="Counts, models and quantization of a collection")
    async def get_collection(self, name: CollectionPath, service: Service) -> CollectionOut:
        return collection_out(await service.stats(name))


@get("/health", tags=["ops"], summary="Liveness", sync_to_thread=False)
def health() -> HealthOut:
    return HealthOut(status="ok")


@get("/ready", tags=["ops"], summary="Readiness: models loaded and store open")
async def ready(service: Service) -> HealthOut:
    """503 (from the dependency) until the lifespan has loaded the models and opened the store."""
    del service
    return HealthOut(status="ready")
