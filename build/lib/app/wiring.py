"""Builds the adapters from ``Settings``: the one place that knows which class serves which port.

Used by both edges (the HTTP app factory and the ingestion CLI).
"""

from __future__ import annotations

import httpx

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.llm_extractive import ExtractiveLLM
from app.adapters.llm_openai import OpenAICompatibleLLM
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.answering import Answerer
from app.core.models import CollectionSpec
from app.core.ports import ImageTextEmbedder, LanguageModel, TextEmbedder
from app.core.prompts import load_prompts
from app.core.retrieval import RetrievalOptions, Retriever
from app.settings import Settings


def build_clip(settings: Settings) -> OpenClipEmbedder:
    c = settings.clip
    return OpenClipEmbedder(
        c.model,
        pretrained=c.pretrained,
        checkpoint=c.checkpoint,
        aligned=c.aligned,
        device=c.device,
        threads=c.threads,
        batch_size=c.batch_size,
        hub_probe_timeout_s=c.hub_probe_timeout_s,
    )


def build_text(settings: Settings) -> SentenceTextEmbedder:
    t = settings.text
    return SentenceTextEmbedder(
        t.model,
        device=t.device,
        batch_size=t.batch_size,
        hub_probe_timeout_s=settings.clip.hub_probe_timeout_s,
    )


def build_store(settings: Settings) -> EdgeVectorStore:
    return EdgeVectorStore(
        settings.collections_dir, max_search_threads=settings.quantization.max_search_threads
    )


def collection_spec(
    settings: Settings, name: str, clip: ImageTextEmbedder, text: TextEmbedder
) -> CollectionSpec:
    return CollectionSpec(
        name=name, clip=clip.info, text=text.info, quantization=settings.quantization.spec()
    )


def build_llm(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> LanguageModel:
    llm = settings.llm
    if llm.provider == "openai":
        return OpenAICompatibleLLM(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            backoff_s=llm.backoff_s,
            transport=transport,
        )
    return ExtractiveLLM()


def build_retriever(settings: Settings, clip: ImageTextEmbedder, text: TextEmbedder) -> Retriever:
    r = settings.retrieval
    return Retriever(
        clip,
        text,
        RetrievalOptions(
            candidates_per_signal=r.candidates_per_signal,
            rrf_k=r.rrf_k,
            min_text_score=r.min_text_score,
            min_clip_text_score=r.min_clip_text_score,
            min_clip_image_score=r.min_clip_image_score,
        ),
    )


def build_answerer(settings: Settings, llm: LanguageModel) -> Answerer:
    return Answerer(
        llm,
        load_prompts(settings.prompts_dir, settings.prompt_version),
        max_source_chars=settings.llm.max_source_chars,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
    )
