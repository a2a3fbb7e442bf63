"""Request bodies: the one way a JSON or multipart body becomes a wire type.

Every route that takes a body reads it here, so all of them answer alike:

- another content type                                         → 415
- not a JSON object (empty, bad UTF-8, malformed, lone surrogate,
  too deeply nested, an array), a multipart body Litestar cannot read → 400
- a JSON object or form field that breaks a field rule          → 422, ``field`` names it
- more multipart parts than ``multipart_form_part_limit``       → 413

JSON is decoded strictly: ``"5"`` or ``5.0`` is not an integer. The errors raised are the core's
(app/core/errors.py); app/http/problems.py maps them. May import litestar, msgspec, app.core and
app.http.schemas.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.exceptions import ClientException
from multipart import ParserLimitReached  # type: ignore[import-untyped]

from app.core.errors import (
    InputError,
    InvalidFieldError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from app.http.schemas import ImageSearchForm

JSON = "application/json"
MULTIPART = "multipart/form-data"
MAX_DEPTH = 32  # the request types nest 3 levels; deeper bodies are refused as a whole

T = TypeVar("T", bound=msgspec.Struct)

# msgspec: "Expected `int | null`, got `str` - at `$.top_k`", "Object missing required field
# `query`", "Object contains unknown field `x` - at `$.filters`".
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`$")


async def json_body(
    request: Request[Any, Any, Any],
    into: type[T],
    *,
    alternative: str = "",
    max_bytes: int | None = None,
) -> T:
    """The request's JSON object as ``into``; ``alternative`` names other accepted bodies.

    ``max_bytes`` bounds a JSON body on a route whose body limit is set for large uploads."""
    if request.content_type[0] != JSON:
        sent = request.content_type[0] or "no content type"
        raise UnsupportedMediaError(f"send {JSON}{alternative}; got {sent}")
    if max_bytes is None:
        return decode_json(await request.body(), into)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise PayloadTooLargeError(f"the JSON body is over {max_bytes} bytes")
    return decode_json(bytes(raw), into)


def decode_json(raw: bytes, into: type[T]) -> T:
    if not raw.strip():
        raise InputError(f"the body is empty; send a JSON object with {_required(into)}")
    try:
        return msgspec.json.decode(raw, type=into, strict=True)
    except msgspec.ValidationError as exc:
        # Typed decoding stops at the first misfit, which may come before a syntax error or
        # deep nesting further on: a body that is not sound JSON is a 400 wherever it breaks.
        unsound = _unsound(raw)
        if unsound:
            raise InputError(unsound) from exc
        raise _validation_error(str(exc), into) from exc
    except msgspec.DecodeError as exc:
        raise InputError(_why_malformed(raw, str(exc))) from exc
    except UnicodeDecodeError as exc:
        raise InputError(_not_utf8(raw)) from exc
    except RecursionError as exc:  # typed decoding stops early, but never answer 500 for depth
        raise InputError(_TOO_DEEP) from exc


_TOO_DEEP = f"the JSON body is nested more than {MAX_DEPTH} levels deep"


def _unsound(raw: bytes) -> str | None:
    """Why ``raw`` is not sound JSON (malformed, not UTF-8, deeper than ``MAX_DEPTH``), or None.

    Looked at only once typed decoding has failed: no valid body comes close to the limit."""
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        return _TOO_DEEP
    except msgspec.DecodeError as exc:
        return _why_malformed(raw, str(exc))
    except UnicodeDecodeError:
        return _not_utf8(raw)
    stack: list[tuple[Any, int]] = [(value, 1)]  # (a value, the containers around it + 1)
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_DEPTH:
                return _TOO_DEEP
            stack.extend((child, depth + 1) for child in item)
    return None


def _required(into: type[msgspec.Struct]) -> str:
    names = [f"'{f.encode_name}'" for f in msgspec.structs.fields(into) if f.required]
    return "the field " + ", ".join(names) if names else "its fields"


def _validation_error(message: str, into: type[msgspec.Struct]) -> InputError:
    """A body that parsed as JSON but does not fit ``into``: 422 naming the field, 400 for a
    body that is not a JSON object at all."""
    m = _AT.match(message)
    reason, path = (m["reason"], (m["path"] or "").lstrip(".")) if m else (message, "")
    named = _NAMED.match(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
        reason = "is required" if named["what"] == "missing required" else "is not a known field"
    if not path:
        return InputError(f"the body must be a JSON object with {_required(into)}: {reason}")
    return InvalidFieldError(path, reason)


def _why_malformed(raw: bytes, reason: str) -> str:
    """Say precisely why msgspec refused ``raw``: read it again, on this error path only, with
    the standard library, whose errors give a position and which accepts lone surrogates."""
    try:
        parsed = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        return _not_utf8(raw)
    except json.JSONDecodeError as exc:
        return f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except ValueError as exc:
        return f"the body is not valid JSON: {exc}"
    except RecursionError:
        return _TOO_DEEP
    where = _lone_surrogate_at(parsed)
    if where is not None:
        return (
            f"{where or 'the body'} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff "
            "without its pair); JSON strings must be valid Unicode"
        )
    return f"the body is not valid JSON: {reason}"


def _no_constant(name: str) -> None:
    msg = f"{name} is not a JSON value"
    raise ValueError(msg)


def _not_utf8(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    return "the body is not valid UTF-8"


def _lone_surrogate_at(value: Any) -> str | None:
    """The path of the first key or string holding a lone surrogate ('' for the body itself)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and _has_surrogate(item):
            return path
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if _has_surrogate(key):
                    return child_path
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


# -- multipart ------------------------------------------------------------------------------

# A form field is what a JSON member is: a list is the field repeated, one item per part.
FORM_LISTS = ("tags", "modalities")
FORM_SINGLE = ("top_k", "collection", "source_prefix", "start_s", "end_s")
_TIME_FIELDS = ("start_s", "end_s")  # filters.time_range, flattened into the form
FORM_FIELDS = ("image", *FORM_SINGLE, *FORM_LISTS)
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_NUMBER = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?")


def multipart_boundary(request: Request[Any, Any, Any]) -> str:
    boundary = request.content_type[1].get("boundary")
    if not boundary:
        raise InputError(f"{MULTIPART} needs a boundary parameter in its Content-Type")
    return boundary


async def form_body(request: Request[Any, Any, Any]) -> FormMultiDict:
    """The parsed multipart body; a body over the part limit is 413, not Litestar's 400."""
    try:
        return await request.form()
    except ClientException as exc:
        if isinstance(exc.__context__, ParserLimitReached):
            limit = request.app.multipart_form_part_limit
            msg = f"the multipart body is over a limit ({exc.__context__}); at most {limit} parts"
            raise PayloadTooLargeError(msg) from exc
        raise
    except (UnicodeDecodeError, LookupError) as exc:  # a text part in bad UTF-8 or charset
        raise InputError(f"a multipart text field cannot be decoded: {exc}") from exc


async def image_search_body(
    request: Request[Any, Any, Any],
) -> tuple[UploadFile, ImageSearchForm]:
    """The ``image`` file and the fields beside it, checked as strictly as the JSON request."""
    form = await form_body(request)
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        msg = f"is not a known field; a multipart search takes {', '.join(FORM_FIELDS)}"
        raise InvalidFieldError(unknown[0], msg)
    uploads = form.getall("image", [])
    if len(uploads) != 1 or not isinstance(uploads[0], UploadFile):
        raise InvalidFieldError("image", "a multipart search needs exactly one 'image' file")
    filters: dict[str, Any] = {name: form.getall(name, []) for name in FORM_LISTS}
    fields: dict[str, Any] = {"filters": filters}
    for name in FORM_SINGLE:
        values = form.getall(name, [])
        if len(values) > 1:
            raise InvalidFieldError(name, "send this field once")
        if not values:
            continue
        if name in _TIME_FIELDS:
            value = values[0]
            # form text is text; a decimal number is a number, anything else fails the check
            number = float(value) if isinstance(value, str) and _NUMBER.fullmatch(value) else value
            filters.setdefault("time_range", {})[name] = number
        else:
            (filters if name == "source_prefix" else fields)[name] = values[0]
    if isinstance(top_k := fields.get("top_k"), str) and _INTEGER.fullmatch(top_k):
        fields["top_k"] = int(top_k)  # form text is text; only whole decimal numbers are ints
    try:
        checked = msgspec.convert(fields, type=ImageSearchForm, strict=True)
    except msgspec.ValidationError as exc:
        error = _validation_error(str(exc), ImageSearchForm)
        if isinstance(error, InvalidFieldError):  # name the form field, not the JSON path
            error = InvalidFieldError(_form_name(error.field), error.reason)
        raise error from exc
    return uploads[0], checked


def _form_name(path: str) -> str:
    return re.sub(r"\[\d+\]$", "", path.removeprefix("filters.").removeprefix("time_range."))


__all__ = [
    "JSON",
    "MULTIPART",
    "decode_json",
    "form_body",
    "image_search_body",
    "json_body",
    "multipart_boundary",
]
