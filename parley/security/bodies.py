"""What a request body may be: one of the server's media types, and at most `max_bytes`.

Both are checked before anything parses the body. A body whose declared type is not one the
server reads gets `415` (a web page can POST `text/plain` to any server without asking, so a
server that parsed it as JSON anyway would take orders from any page); a declared length over
the limit gets `413` before a byte is read. A body without a declared length (chunked) is
counted as it is read, and `413` comes as soon as it passes the limit: the reader raises the
HTTPException, so the app's own error handlers shape that answer. A request without a body
(no length, or length 0, and not chunked) is not concerned.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ErrorResponse = Callable[[int, str], Response]


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` → `application/json`."""
    return (content_type or "").split(";")[0].strip().lower()


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def refusal(
    headers: Headers, max_bytes: int, media_types: Collection[str]
) -> tuple[int, str] | None:
    """Why a request's declared body is refused (status, reason), or None (pure)."""
    if not has_body(headers):
        return None
    declared = media_type(headers.get("content-type"))
    if declared not in media_types:
        accepted = ", ".join(sorted(media_types))
        return 415, f"unsupported content type {declared or '(none)'!r}; send {accepted}"
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        return 413, f"body of {length} bytes is over the {max_bytes}-byte limit"
    return None


def _detail(status: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status)


class BodyPolicy:
    """ASGI middleware: refuse bodies of the wrong type or size before the app reads them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        media_types: Collection[str],
        error_response: ErrorResponse = _detail,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.media_types = frozenset(media_types)
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = refusal(Headers(scope=scope), self.max_bytes, self.media_types)
        if refused is not None:
            await self.error_response(*refused)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"body is over the {self.max_bytes}-byte limit")
            return message

        await self.app(scope, counted, send)
