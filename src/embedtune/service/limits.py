"""The request body limit: 413 before a body over it is read.

A ``Content-Length`` over the limit is refused before the app runs and before a byte of the body
is read. A body sent without a length (chunked) is counted as it arrives and refused as soon as
it passes the limit; only the part up to the limit is ever held. Both answers are OpenAI-shaped:
the first is sent here, the second raised as a 413 ``HTTPException`` that the framework's body
reader passes on to the one error mapping (``errors.py``).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

__all__ = ["BodyLimit"]


def _too_large(limit: int) -> str:
    return f"the request body is over this server's limit of {limit} bytes; send fewer inputs per request"


class BodyLimit:
    """ASGI middleware: HTTP request bodies of at most ``max_bytes`` bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if length.isdigit():
                error = ApiError(413, _too_large(self.max_bytes), code="body_too_large")
            else:
                error = ApiError(400, "the Content-Length header is not a number")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)
