"""Thin controllers: parse the request, call one service method, map the result to a schema."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.exceptions import ServiceUnavailableException
from litestar.params import PathParameter, QueryParameter
from litestar.response import File

from app.core.collections import COLLECTION_NAME_PATTERN
from app.core.errors import ConflictError, StoreError
from app.http.bodies import MULTIPART, image_search_body, json_body, multipart_boundary
from app.http.files import FileStream, file_response
from app.http.ingest import IngestService
from app.http.openapi import (
    AnyFileOperation,
    DocumentedOperation,
    FileOperation,
    IngestOperation,
    JsonBodyOperation,
    SearchOperation,
    problem_responses,
)
from app.http.schemas import (
    AskRequest,
    AskResponse,
    AssetOut,
    CollectionOut,
    HealthOut,
    IngestLimitsOut,
    IngestPathsRequest,
    JobListOut,
    JobOut,
    SearchRequest,
    SearchResponse,
    answer_out,
    asset_out,
    collection_out,
    search_out,
)
from app.http.service import AssetFile, QueryService
from app.http.streaming import EventStream, sse_events

AssetId = Annotated[
    str, PathParameter(pattern=r"^[0-9a-f]{32}$", description="Asset id (32 hex characters).")
]
# Litestar checks a pattern with Python's re.search, where "$" also matches before a final
# newline ("C\n" passes); JSON Schema's "$" does not. "(?!\n)" makes both read it alike.
_COLLECTION_NAME = COLLECTION_NAME_PATTERN + r"(?!\n)"
CollectionPath = Annotated[
    str, PathParameter(pattern=_COLLECTION_NAME, description="Collection name.")
]
CollectionQuery = Annotated[
    str | None,
    QueryParameter(pattern=_COLLECTION_NAME, description="Collection (default: the service's)."),
]
JobId = Annotated[
    str, PathParameter(pattern=r"^[0-9a-f]{32}$", description="Job id (32 hex characters).")
]
JobsLimit = Annotated[
    int, QueryParameter(gt=0, le=100, description="How many jobs, most recent first.")
]
SegmentQuery = Annotated[
    int | None,
    QueryParameter(
        gt=-1,  # not ge=0: Litestar leaves a zero bound out of the OpenAPI document
        le=1_000_000,
        description="A segment's own picture (a video frame, a PDF page) instead of the asset's.",
    ),
]
# The errors every route on a collection can meet: no such collection or asset, a collection
# built with other models or held by another process, the service still starting.
COLLECTION_PROBLEMS = (404, 409, 422, 503)


Service = NamedDependency[QueryService]
Ingest = NamedDependency[IngestService]


def provide_service(state: State) -> QueryService:
    service = state.get("service")
    if not isinstance(service, QueryService):
        raise ServiceUnavailableException("the service is still starting")
    return service


def provide_ingest(state: State) -> IngestService:
    ingest = state.get("ingest")
    if not isinstance(ingest, IngestService):
        raise ServiceUnavailableException("the service is still starting")
    return ingest


def _file(found: AssetFile) -> File:
    return File(
        path=found.path,
        filename=found.filename,
        media_type=found.media_type,
        content_disposition_type="inline",
    )


class SearchController(Controller):
    path = "/v1"
    tags = ["retrieval"]  # noqa: RUF012

    @post(
        "/search",
        status_code=200,
        summary="Search the library (text or image query)",
        operation_class=SearchOperation,
        responses=problem_responses(400, 413, 415, *COLLECTION_PROBLEMS),
    )
    async def search(self, request: Request[Any, Any, State], service: Service) -> SearchResponse:
        """Send JSON ``{"query": "...", "top_k": 5, "filters": {...}}`` for a text query, or
        ``multipart/form-data`` with an ``image`` file (and optional ``top_k``, ``collection``,
        ``tags``, ``modalities``, ``source_prefix`` fields; repeat a list field once per item)
        to search with an image."""
        if request.content_type[0] == MULTIPART:
            upload, fields = await image_search_body(request)
            name = service.collection_name(fields.collection)
            retrieval = await service.search_image(
                await upload.read(),
                collection=name,
                top_k=fields.top_k,
                filters=fields.filters.to_domain(),
            )
            return search_out(retrieval, name, dashboard=await service.dashboard_url(name))
        body = await json_body(
            request, SearchRequest, alternative=f" (text query) or {MULTIPART} (image query)"
        )
        name = service.collection_name(body.collection)
        retrieval = await service.search_text(
            body.query, collection=name, top_k=body.top_k, filters=body.filters.to_domain()
        )
        return search_out(retrieval, name, dashboard=await service.dashboard_url(name))

    @post(
        "/ask",
        status_code=200,
        summary="Answer a question from the library, with citations",
        operation_class=JsonBodyOperation.of(AskRequest, streams=True),
        responses=problem_responses(400, 413, 415, 429, 502, 504, *COLLECTION_PROBLEMS),
    )
    async def ask(
        self, request: Request[Any, Any, State], service: Service
    ) -> AskResponse | EventStream:
        body = await json_body(request, AskRequest)
        name = service.collection_name(body.collection)
        filters = body.filters.to_domain()
        if body.stream:
            events = await service.stream(
                body.question, collection=name, top_k=body.top_k, filters=filters
            )
            dashboard = await service.dashboard_url(name)
            return EventStream(
                sse_events(
                    events,
                    name,
                    final=lambda a, r: answer_out(
                        a, name, retrieved=len(r.retrieval.hits), dashboard=dashboard
                    ),
                    dashboard=dashboard,
                )
            )
        result = await service.ask(
            body.question, collection=name, top_k=body.top_k, filters=filters
        )
        return answer_out(
            result.answer,
            name,
            retrieved=len(result.retrieval.hits),
            dashboard=await service.dashboard_url(name),
        )


class AssetController(Controller):
    path = "/v1/assets"
    tags = ["assets"]  # noqa: RUF012

    # Litestar 2 answers OPTIONS on a path with several handlers (here GET and DELETE) with
    # the methods of one of them only (litestar-org/litestar#4169, fixed in 3.0). This handler
    # names them all; Litestar registers a controller's handlers in the order of their names,
    # and this one must come first, before Litestar adds an OPTIONS handler of its own.
    @route(
        "/{asset_id:str}",
        http_method=HttpMethod.OPTIONS,
        status_code=204,
        include_in_schema=False,
        sync_to_thread=False,
    )
    def allowed_methods(self, request: Request[Any, Any, State]) -> Response[None]:
        template = request.scope["path_template"]
        methods = next(r.methods for r in request.app.routes if r.path_format == template)
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})

    @get(
        "/{asset_id:str}",
        summary="An ingested asset's metadata",
        operation_class=DocumentedOperation,
        responses=problem_responses(*COLLECTION_PROBLEMS),
    )
    async def get_asset(
        self, asset_id: AssetId, service: Service, collection: CollectionQuery = None
    ) -> AssetOut:
        name = service.collection_name(collection)
        return asset_out(await service.asset(asset_id, collection=name), name)

    @get(
        "/{asset_id:str}/content",
        summary="The ingested file itself",
        operation_class=AnyFileOperation,
        responses=problem_responses(*COLLECTION_PROBLEMS, 416),
    )
    async def content(
        self,
        request: Request[Any, Any, State],
        asset_id: AssetId,
        service: Service,
        collection: CollectionQuery = None,
    ) -> FileStream:
        """Honours ``Range: bytes=…`` (206 with ``Content-Range``; 416 outside the file), so
        players can seek; a file that changed, moved out of its library or became a link since
        ingestion is refused (409)."""
        name = service.collection_name(collection)
        opened = await service.asset_content(asset_id, collection=name)
        return file_response(
            opened.fd,
            size=opened.size,
            mtime=opened.mtime,
            media_type=opened.media_type,
            filename=opened.filename,
            range_header=request.headers.get("range"),
        )

    @get(
        "/{asset_id:str}/thumbnail",
        summary="The asset's thumbnail, or one segment's frame or page (JPEG)",
        operation_class=FileOperation,
        media_type="image/jpeg",
        content_media_type="image/jpeg",
        responses=problem_responses(*COLLECTION_PROBLEMS),
    )
    async def thumbnail(
        self,
        asset_id: AssetId,
        service: Service,
        collection: CollectionQuery = None,
        segment: SegmentQuery = None,
    ) -> File:
        name = service.collection_name(collection)
        return _file(await service.asset_thumbnail(asset_id, collection=name, segment=segment))

    @delete(
        "/{asset_id:str}",
        summary="Remove an asset: its points, its thumbnails, and its file if it was uploaded",
        operation_class=DocumentedOperation,
        responses=problem_responses(*COLLECTION_PROBLEMS),
    )
    async def delete_asset(
        self, asset_id: AssetId, service: Service, collection: CollectionQuery = None
    ) -> None:
        """A file in a library folder stays where it is (ingesting that folder again brings
        the asset back); a file uploaded to the service is deleted with its asset."""
        await service.delete_asset(asset_id, collection=service.collection_name(collection))


class CollectionController(Controller):
    path = "/v1/collections"
    tags = ["collections"]  # noqa: RUF012

    @get(
        "/{name:str}",
        summary="Counts, models and quantization of a collection",
        operation_class=DocumentedOperation,
        responses=problem_responses(*COLLECTION_PROBLEMS),
    )
    async def get_collection(self, name: CollectionPath, service: Service) -> CollectionOut:
        return collection_out(*await service.stats(name))


class IngestController(Controller):
    """Its router gives it a body limit of its own: uploads are far larger than queries."""

    path = "/v1/ingest"
    tags = ["ingestion"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        summary="Ingest uploaded files, or files on the server, in a background job",
        operation_class=IngestOperation,
        responses=problem_responses(400, 403, 404, 413, 415, 422, 503),
    )
    async def ingest(self, request: Request[Any, Any, State], ingest: Ingest) -> JobOut:
        """Answers at once with the job (202); ``GET /v1/jobs/{id}`` follows it. Paths must
        lie under the folders the service may read (``MMRAG_HTTP__INGEST_ROOTS``): 403 for one
        outside them, or led outside by a symbolic link; 404 for one that does not exist."""
        if request.content_type[0] == MULTIPART:
            return await ingest.upload(request.stream(), multipart_boundary(request))
        body = await json_body(
            request,
            IngestPathsRequest,
            alternative=f" (paths on the server) or {MULTIPART} (files)",
            max_bytes=request.app.state.max_upload_bytes,
        )
        return await ingest.from_paths(
            body.paths, collection=body.collection, tags=body.tags, sync=body.sync
        )

    @get(
        "/limits",
        summary="How many files and bytes one upload may carry; whether paths are accepted",
        operation_class=DocumentedOperation,
        responses=problem_responses(503),
    )
    async def limits(self, ingest: Ingest) -> IngestLimitsOut:
        return IngestLimitsOut(
            max_files=ingest.limits.max_files,
            max_bytes=ingest.limits.max_bytes,
            paths=ingest.paths_allowed,
        )


class JobController(Controller):
    path = "/v1/jobs"
    tags = ["ingestion"]  # noqa: RUF012

    @get(
        "/",
        summary="Recent ingest jobs, most recent first",
        operation_class=DocumentedOperation,
        responses=problem_responses(422, 503),
    )
    async def jobs(self, ingest: Ingest, limit: JobsLimit = 20) -> JobListOut:
        return JobListOut(jobs=ingest.recent(limit))

    @get(
        "/{job_id:str}",
        summary="An ingest job: status, progress, each file's outcome",
        operation_class=DocumentedOperation,
        responses=problem_responses(404, 422, 503),
    )
    async def job(self, job_id: JobId, ingest: Ingest) -> JobOut:
        return ingest.job(job_id)


@get(
    "/health",
    tags=["ops"],
    summary="Liveness",
    sync_to_thread=False,
    operation_class=DocumentedOperation,
)
def health() -> HealthOut:
    return HealthOut(status="ok")


@get(
    "/ready",
    tags=["ops"],
    summary="Readiness: models loaded and store open",
    operation_class=DocumentedOperation,
    responses=problem_responses(503),
)
async def ready(service: Service) -> HealthOut:
    """503 until the models are loaded and the default collection can be served (not locked
    by another process, built with these models)."""
    try:
        await service.check_ready()
    except (ConflictError, StoreError) as exc:
        raise ServiceUnavailableException(f"not ready: {exc}") from exc
    return HealthOut(status="ready")
