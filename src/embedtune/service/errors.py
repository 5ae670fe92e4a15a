"""Every error the service answers, in OpenAI's shape, mapped in this one module.

A response body is always ``{"error": {"message", "type", "param", "code"}}``. Errors the
service raises on purpose are ``ApiError``; errors from the library (``embedtune.errors``) and
from the framework (404, 405, 413) are translated by :func:`api_error_for`; anything else is a
bug: answered 500 with a fixed message, its traceback logged (tracebacks carry no request
headers, so no key).

==========================================  ======  =========================
cause                                       status  type
==========================================  ======  =========================
bad JSON, bad fields, bad input, too long   400     invalid_request_error
missing or wrong API key                    401     authentication_error
unknown model                               404     invalid_request_error
body over the limit                         413     invalid_request_error
a key's budget spent (``Retry-After``)      429     rate_limit_error
the embedding backend failed                502     server_error
still loading, shutting down, transient     503     server_error
a bug                                       500     server_error
==========================================  ======  =========================
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import (
    AuthenticationError,
    ConfigError,
    EmbedtuneError,
    InputError,
    InvalidInputError,
    ProviderError,
    StoreError,
    TextTooLongError,
    TransientError,
)

__all__ = ["ApiError", "api_error_for", "error_body", "install_error_handlers", "validation_error"]

log = logging.getLogger("embedtune.service")

INVALID = "invalid_request_error"
SERVER = "server_error"


class ApiError(Exception):
    """An error answer: HTTP status, one-line message, OpenAI's ``type``, ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self), status_code=self.status, headers=self.headers())


def error_body(error: ApiError) -> dict:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def api_error_for(exc: BaseException) -> ApiError:
    """The answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, str(exc.detail), code=_HTTP_CODES.get(exc.status_code))
    if isinstance(exc, TextTooLongError):
        return ApiError(400, str(exc), param="input", code="input_too_long")
    if isinstance(exc, InvalidInputError):
        return ApiError(400, str(exc), param="input", code="invalid_input")
    if isinstance(exc, (InputError, ConfigError)):
        return ApiError(400, str(exc))
    if isinstance(exc, TransientError):
        return ApiError(503, f"the embedding backend is unavailable: {exc}", type=SERVER, retry_after=exc.retry_after)
    if isinstance(exc, AuthenticationError):
        return ApiError(502, "the embedding backend refused this server's credentials", type=SERVER)
    if isinstance(exc, ProviderError):
        return ApiError(502, f"the embedding backend failed: {exc}", type=SERVER)
    if isinstance(exc, StoreError):
        return ApiError(503, f"the store is unavailable: {exc}", type=SERVER, retry_after=5)
    if isinstance(exc, EmbedtuneError):
        return ApiError(500, str(exc), type=SERVER)
    return ApiError(500, "internal error; the server's log has the details", type=SERVER)


def validation_error(exc: ValidationError | RequestValidationError) -> ApiError:
    """A 400 naming the first field that failed and why (never echoing the value sent)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if loc and loc[0] == "input":
        return ApiError(
            400,
            "input must be a string, an array of strings, an array of token ids or an array of token-id arrays",
            param="input",
        )
    where = ".".join(loc)
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
    return ApiError(400, message, param=where or None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception a request can raise through :func:`api_error_for`."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        return api_error_for(exc).response()

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        return validation_error(exc).response()  # type: ignore[arg-type]  # registered for that type only

    async def on_library_error(request: Request, exc: Exception) -> JSONResponse:
        error = api_error_for(exc)
        if error.status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, error.message, exc_info=exc)
        return error.response()

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette raises the exception again once this answer is sent: uvicorn logs its traceback.
        return api_error_for(exc).response()

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(EmbedtuneError, on_library_error)
    app.add_exception_handler(Exception, on_bug)
