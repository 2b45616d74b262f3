"""The API's errors: one JSON shape, OpenAI's, for every route and every kind of error.

``{"error": {"message", "type", "param", "code"}}`` with a 4xx status that says what went
wrong: 400 invalid or unsupported request, 404 unknown model, 413 prompt too long, 422 invalid
field, 503 busy. OpenAI's clients show ``message``; it names fields as the client sent them
(``messages[0].content``), never the server's internal types.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from taleforge.errors import ConfigError
from taleforge.serve.registry import BusyError, UnknownModelError
from taleforge.serve.sanitize import TextTooLong

#: The error type of a field the server knows but does not honour (a validator raises
#: ``PydanticCustomError(UNSUPPORTED, ...)``): answered 400, like an unknown field.
UNSUPPORTED = "unsupported"


class APIError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code = param, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def as_api_error(exc: Exception) -> APIError:
    """The answer to an error of the generation path (re-raises any other exception)."""
    if isinstance(exc, UnknownModelError):
        return APIError(404, str(exc), "model_not_found", "model", "model_not_found")
    if isinstance(exc, BusyError):
        return APIError(503, str(exc), "server_busy")
    if isinstance(exc, TextTooLong):
        return APIError(413, str(exc), "invalid_request_error", exc.field, "prompt_too_long")
    if isinstance(exc, ConfigError):
        return APIError(400, str(exc), "invalid_request_error")
    raise exc


# -- invalid bodies ------------------------------------------------------------------------

#: Parts of a pydantic error location that name its internal types, not the client's fields
#: (``function-after[clean_text(), str]``, ``list[str]``): never shown.
_INTERNAL = re.compile(r"[\[\](),-]")


def _where(location: Sequence[Any]) -> str:
    """``('body', 'messages', 0, 'content')`` as the client wrote it: ``messages[0].content``."""
    name = ""
    for part in location:
        if part == "body" and not name:
            continue
        if isinstance(part, int):
            name += f"[{part}]"
        elif not _INTERNAL.search(str(part)):
            name += f".{part}" if name else str(part)
    return name or "body"


def _what(error: Mapping[str, Any]) -> str:
    kind, message = error.get("type"), str(error.get("msg", "is invalid"))
    if kind == "missing":
        return "is required"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return "must be a JSON object"
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.removeprefix("Input ")


def _refusal(error: Mapping[str, Any], model: type[BaseModel] | None) -> tuple[str, str]:
    """(message, code) for a field that is not honoured: unknown, or known and unsupported
    (the route's ``unsupported_fields`` say why, for a field at any depth of its body)."""
    location = error.get("loc", ())
    where = _where(location)
    if error.get("type") == UNSUPPORTED:
        return f"'{where}' {error.get('msg')}", "unsupported_parameter"
    name = str(location[-1]) if location else where
    renamed: Mapping[str, str] = getattr(model, "renamed_fields", {})
    if where in renamed:
        return f"'{where}' is called '{renamed[where]}' here: send that", "unknown_parameter"
    reasons: Mapping[str, str] = getattr(model, "unsupported_fields", {})
    if name in reasons:
        message = f"'{where}' is not supported by this server: {reasons[name]}; leave it out"
        return message, "unsupported_parameter"
    known = list(model.model_fields) if model is not None and where == name else []
    close = difflib.get_close_matches(name, known, 1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"'{where}' is not a field of this request{hint}; leave it out", "unknown_parameter"


def body_model(request: Request) -> type[BaseModel] | None:
    """The model of the body of the route ``request`` was routed to (None: none)."""
    route = request.scope.get("route")
    annotation = getattr(
        getattr(getattr(route, "body_field", None), "field_info", None), "annotation", None
    )
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def invalid_body(exc: RequestValidationError, model: type[BaseModel] | None = None) -> APIError:
    """The answer to a request body that did not validate against ``model`` (the route's).

    A field that is not honoured (unknown, or known but not supported here) is a 400 that
    names it; a malformed body a 400; an invalid value a 422. Messages name the client's
    fields and say what is expected, without the server's internal type names.
    """
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return APIError(
            400, "the request body is not valid JSON: send a JSON object", "invalid_request_error"
        )
    refused = [e for e in errors if e.get("type") in ("extra_forbidden", UNSUPPORTED)]
    if refused:
        answers = [_refusal(error, model) for error in refused[:5]]
        param = _where(refused[0].get("loc", ()))
        message = "; ".join(message for message, _ in answers)
        return APIError(400, message, "invalid_request_error", param, answers[0][1])
    # One message per field: the branches of a union each report (string? list?), joined.
    found: dict[str, list[str]] = {}
    for error in errors:
        what = _what(error)
        messages = found.setdefault(_where(error.get("loc", ())), [])
        if what not in messages:
            messages.append(what)
    parts = [f"'{where}' {' or '.join(what)}" for where, what in list(found.items())[:5]]
    return APIError(
        422,
        "invalid request: " + "; ".join(parts),
        "invalid_request_error",
        next(iter(found), None),
        "invalid_value",
    )
