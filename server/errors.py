"""One exception family for the service and one mapping to OpenAI-shaped error bodies.

Problems are raised where they are found (`ServiceError` subclasses carry status, type and the offending
parameter) and turned into `{"error": {"message", "type", "param", "code"}}` once, here. FastAPI's request
validation errors become 400 (not 422), unknown routes 404, and anything unexpected a 500 whose body says
nothing internal while the traceback goes to the log.
"""

from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(ServiceError):
    status_code = 401
    error_type = "invalid_request_error"


class NotFoundError(ServiceError):
    status_code = 404
    error_type = "not_found_error"


class ConflictError(ServiceError):
    status_code = 409
    error_type = "conflict_error"


class NotReadyError(ServiceError):
    status_code = 503
    error_type = "service_unavailable"


class EngineDeadError(NotReadyError):
    """The engine process died: this replica cannot serve again and is exiting; another replica can."""


class OverCapacityError(ServiceError):
    """The server has no room for this request's work now; the client retries after `retry_after_s`."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, code: str = "queue_full") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class RequestTimeoutError(ServiceError):
    status_code = 504
    error_type = "timeout_error"


class EngineError(ServiceError):
    status_code = 500
    error_type = "engine_error"


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error message that quotes the caller's bad input (a lone surrogate,
    say) must still encode, or the 400 that reports it becomes a 500."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status_code: int, message: str, error_type: str, param: str | None = None, code: str | None = None):
    return AsciiJSONResponse(status_code=status_code, content=error_body(message, error_type, param, code))


# pydantic names the member of a union a value failed in (`stop: str | list[str]` -> 'str', 'list[str]',
# 'function-after[...]'); those are types, not parameters, so they stay out of `param`.
_UNION_MEMBER = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*\[.*\]|str|int|float|bool|none)$")


def _location(loc: tuple) -> str:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, str) and _UNION_MEMBER.match(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_validation_errors(errors: list[dict]) -> tuple[str, str | None]:
    """A readable message and the first offending parameter from pydantic's error list."""
    messages, first_param = [], None
    for error in errors:
        if error.get("type") == "json_invalid":
            return f"request body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}", None
        param = _location(tuple(error.get("loc", ())))
        first_param = first_param or param or None
        messages.append(f"{param or 'body'}: {error.get('msg')}")
    return "; ".join(messages) or "invalid request", first_param


def install_service_error_handler(app: FastAPI) -> None:
    """Our errors as OpenAI-shaped bodies: all the vLLM endpoint plugin adds to vLLM's own handlers."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError):
        if exc.status_code == 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        response = error_response(exc.status_code, exc.message, exc.error_type, exc.param, exc.code)
        if isinstance(exc, OverCapacityError):
            response.headers["retry-after"] = str(exc.retry_after_s)
        return response


def install_error_handlers(app: FastAPI) -> None:
    """Every error of the standalone server, from validation to the unexpected, as an OpenAI-shaped body."""
    install_service_error_handler(app)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        message, param = describe_validation_errors(list(exc.errors()))
        return error_response(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
            return error_response(404, message, "not_found_error")
        if exc.status_code == 405:
            return error_response(
                405, f"method {request.method} not allowed on {request.url.path}", "invalid_request_error"
            )
        error_type = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        return error_response(exc.status_code, str(exc.detail), error_type)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal server error; see the server log", "internal_error")
