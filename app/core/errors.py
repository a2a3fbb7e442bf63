"""The project's one error tree.

    MMRagError
    ├── ConfigurationError            a setting is wrong or missing; refuse to start
    │   └── ModelUnavailableError     model weights cannot be had (offline, missing file)
    ├── InputError                    a caller sent something unusable            → 400
    │   ├── InvalidFieldError         a well-formed request with a bad field     → 422
    │   ├── UnsupportedMediaError     a file or upload of a kind we cannot read  → 415
    │   ├── PayloadTooLargeError      an upload over the configured limit        → 413
    │   └── RangeNotSatisfiableError  a byte range outside the file              → 416
    ├── NotFoundError                                                            → 404
    │   ├── CollectionNotFoundError
    │   └── AssetNotFoundError
    ├── ConflictError                                                            → 409
    │   ├── CollectionMismatchError   a collection built with other models/dims
    │   ├── StoreLockedError          another process holds the collection open
    │   └── AssetChangedError         the file on disk is no longer the one ingested
    ├── StoreError                    the vector engine failed                    → 503
    └── LLMError                      the language model failed                   → 503
        ├── LLMRateLimitedError       still rate limited after retries            → 429
        ├── LLMTimeoutError           no answer within the timeout (cancelled)    → 504
        └── LLMOutputError            the model's output is unusable              → 502

Adapters translate library errors into these (``raise ... from exc``); the HTTP layer maps
them to problem details in one place. "Nothing relevant found" is a normal answer, not an error.
"""

from __future__ import annotations


class MMRagError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(MMRagError):
    """A setting is wrong or missing; the message names the setting to change."""


class ModelUnavailableError(ConfigurationError):
    """Model weights cannot be loaded (no network, missing or unreadable file)."""


class InputError(MMRagError):
    """A caller sent something unusable."""


class InvalidFieldError(InputError):
    """A well-formed request whose field breaks a limit or rule."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class UnsupportedMediaError(InputError):
    """A file or upload of a kind that cannot be read."""


class PayloadTooLargeError(InputError):
    """An upload larger than the configured limit."""


class RangeNotSatisfiableError(InputError):
    """A Range header that selects no byte of the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range selects nothing in a file of {size} bytes")
        self.size = size


class ForbiddenError(MMRagError):
    """The caller named something this service may not touch (a path outside the folders it
    may ingest from)."""


class NotFoundError(MMRagError):
    """Something named by the caller does not exist."""


class CollectionNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist; ingest into it first")
        self.name = name


class AssetNotFoundError(NotFoundError):
    def __init__(self, asset_id: str, detail: str | None = None) -> None:
        super().__init__(detail or f"asset {asset_id!r} is not in this collection")
        self.asset_id = asset_id


class ConflictError(MMRagError):
    """The request conflicts with the current state of the store."""


class CollectionMismatchError(ConflictError):
    """A collection was built with other embedding models, dimensions or settings."""


class StoreLockedError(ConflictError):
    """The embedded engine's directory is held by another process (or another opener)."""


class AssetChangedError(ConflictError):
    """An asset's file changed, moved out of its library or became a link since ingestion."""


class StoreError(MMRagError):
    """The vector engine failed."""


class LLMError(MMRagError):
    """The language model provider failed."""


class LLMRateLimitedError(LLMError):
    """The provider kept answering 429 after every retry."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMTimeoutError(LLMError):
    """The provider did not answer within the configured timeout."""


class LLMOutputError(LLMError):
    """The model answered, but not in a form that can be used (never shown as an answer)."""
