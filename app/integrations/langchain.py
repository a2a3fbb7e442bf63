"""``MMRagRetriever``: the library as a LangChain retriever, in-process or over the HTTP API.

    from app.integrations.langchain import MMRagRetriever

    retriever = MMRagRetriever(base_url="http://127.0.0.1:8000", api_key="...", k=4)
    docs = retriever.invoke("how much dry food does the cat eat?")

    retriever = MMRagRetriever.in_process(settings, k=4)   # same process, no server

Each ``Document`` holds the hit's text (snippet, caption or chunk) and metadata: ``asset_id``,
``source`` (library path), ``title``, ``modality``, ``kind``, ``page`` / ``start_s`` / ``end_s``
where the hit has one, ``score`` and per-signal ``scores``, ``relevant``, ``content_url`` and
``thumbnail_url`` (absolute when ``base_url`` is known). Both ``invoke`` and ``ainvoke`` work;
``k`` may also be given per call (``retriever.invoke(q, k=3)``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import msgspec
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, SecretStr, SkipValidation

from app.core.errors import MMRagError
from app.core.models import SearchFilters, SearchHit, Signal
from app.core.ports import VectorCollection
from app.core.retrieval import Retriever
from app.http.schemas import Filters, asset_urls, snippet

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True, slots=True)
class InProcessSearch:
    """The retrieval core and one open collection, for a retriever without a server."""

    retriever: Retriever
    collection: VectorCollection
    name: str

    def documents(self, query: str, k: int, filters: SearchFilters) -> list[Document]:
        result = self.retriever.search_text(self.collection, query, top_k=k, filters=filters)
        return [
            _document(hit, self.name, relevant=ok)
            for hit, ok in zip(result.hits, result.relevant, strict=True)
        ]


def _document(hit: SearchHit, collection: str, *, relevant: bool) -> Document:
    segment = hit.segment
    asset = segment.asset
    content, thumbnail = asset_urls(
        asset.asset_id, collection, has_thumbnail=asset.thumbnail is not None
    )
    metadata: dict[str, Any] = {
        "asset_id": asset.asset_id,
        "source": asset.library_path,
        "title": asset.title,
        "modality": asset.modality.value,
        "kind": segment.kind.value,
        "segment_index": segment.index,
        "score": hit.score,
        "scores": {s.value: hit.signal_scores[s] for s in Signal if s in hit.signal_scores},
        "relevant": relevant,
        "content_url": content,
        "thumbnail_url": thumbnail,
        "collection": collection,
    }
    for name in ("page", "start_s", "end_s"):
        value = getattr(segment.locator, name)
        if value is not None:
            metadata[name] = value
    return Document(page_content=snippet(segment), metadata=metadata)


class MMRagRetriever(BaseRetriever):
    """Searches an mmrag library (text query, every modality) and returns LangChain documents."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str | None = Field(default=None, description="The service, e.g. http://host:8000")
    api_key: SecretStr | None = None
    collection: str | None = None
    k: int = Field(default=4, ge=1, le=100)
    filters: dict[str, Any] = Field(default_factory=dict)
    relevant_only: bool = Field(
        default=False, description="Drop hits below the service's relevance thresholds."
    )
    timeout_s: float = 60.0
    local: Annotated[InProcessSearch | None, SkipValidation()] = None  # see in_process()
    http_client: httpx.Client | None = Field(default=None, description="Reuse a client.")
    async_http_client: httpx.AsyncClient | None = None

    @classmethod
    def in_process(cls, settings: Settings, **kwargs: Any) -> MMRagRetriever:
        """Loads the models and opens the collection in this process (it takes the lock)."""
        from app.wiring import build_clip, build_retriever, build_store, build_text, collection_spec

        clip, text = build_clip(settings), build_text(settings)
        name = kwargs.pop("collection", None) or settings.collection
        collection = build_store(settings).open(
            collection_spec(settings, name, clip, text), create=False
        )
        search = InProcessSearch(build_retriever(settings, clip, text), collection, name)
        return cls(local=search, collection=name, **kwargs)

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key.get_secret_value()} if self.api_key else {}

    def _body(self, query: str, k: int) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "top_k": k}
        if self.collection:
            body["collection"] = self.collection
        if self.filters:
            body["filters"] = self.filters
        return body

    def _from_response(self, response: httpx.Response) -> list[Document]:
        if response.is_error:
            detail = response.json().get("detail", response.text) if response.content else ""
            msg = f"mmrag search failed ({response.status_code}): {detail}"
            raise MMRagError(msg)
        data = response.json()
        base = (self.base_url or "").rstrip("/")
        docs = []
        for hit in data["hits"]:
            metadata = {
                key: hit[key]
                for key in ("asset_id", "source", "title", "modality", "kind", "segment_index")
            }
            metadata.update(
                score=hit["score"],
                scores=hit["scores"],
                relevant=hit["relevant"],
                content_url=base + hit["content_url"],
                thumbnail_url=base + hit["thumbnail_url"] if hit["thumbnail_url"] else None,
                collection=data["collection"],
                **{k: v for k, v in hit["locator"].items() if k in ("page", "start_s", "end_s")},
            )
            docs.append(Document(page_content=hit["snippet"], metadata=metadata))
        return docs

    def _keep(self, docs: list[Document]) -> list[Document]:
        return [d for d in docs if d.metadata["relevant"]] if self.relevant_only else docs

    def _local_filters(self) -> SearchFilters:
        return msgspec.convert(self.filters, type=Filters).to_domain()

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        del run_manager
        k = k or self.k
        if self.local is not None:
            return self._keep(self.local.documents(query, k, self._local_filters()))
        if not self.base_url:
            raise MMRagError("MMRagRetriever needs base_url (HTTP) or in_process(settings)")
        if self.http_client is not None:
            response = self.http_client.post(
                f"{self.base_url.rstrip('/')}/v1/search",
                json=self._body(query, k),
                headers=self._headers(),
            )
        else:
            with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
                response = client.post(
                    "/v1/search", json=self._body(query, k), headers=self._headers()
                )
        return self._keep(self._from_response(response))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        del run_manager
        k = k or self.k
        if self.local is not None:
            local = self.local
            filters = self._local_filters()
            docs = await asyncio.to_thread(local.documents, query, k, filters)
            return self._keep(docs)
        if not self.base_url:
            raise MMRagError("MMRagRetriever needs base_url (HTTP) or in_process(settings)")
        if self.async_http_client is not None:
            response = await self.async_http_client.post(
                f"{self.base_url.rstrip('/')}/v1/search",
                json=self._body(query, k),
                headers=self._headers(),
            )
        else:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s) as client:
                response = await client.post(
                    "/v1/search", json=self._body(query, k), headers=self._headers()
                )
        return self._keep(self._from_response(response))
