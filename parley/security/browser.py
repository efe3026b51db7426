"""What a web browser may do to a server: which Host names it answers (DNS rebinding), which
other origins may call it (CORS), and that no other origin's page makes it change state (CSRF).

- Host allow-list (Starlette's `TrustedHostMiddleware`, `400` otherwise): a page on
  `evil.example` whose name is re-pointed at 127.0.0.1 reaches a local server with
  `Host: evil.example`; a server that answers only its own names refuses it. Names are
  compared without the port (the rebinding changes the name, never the port).
- CORS (Starlette's `CORSMiddleware`): only the listed origins; none by default, so a
  preflight from any other origin gets no `Access-Control-Allow-Origin` and the browser stops.
- Origin check: a state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) that a browser sent
  from a page of another origin gets `403`, unless that origin is one of the CORS origins. It
  closes the one hole CORS leaves: a *simple* cross-origin request (a `POST` without a body, or
  with a form or `text/plain` body) is sent without asking, and only its answer is hidden from
  the page. Requests without an `Origin` header (not from a browser page) are not concerned.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: As a Host header carries them (an IPv6 address in brackets).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def loopback_hosts(bind_host: str) -> list[str]:
    """The Host names of a server reached from this machine only: the loopback names and the
    address it listens on, when that is a specific one."""
    names = list(LOOPBACK_NAMES)
    named = f"[{bind_host}]" if ":" in bind_host else bind_host
    if bind_host not in ("", "0.0.0.0", "::") and named not in names:
        names.append(named)
    return names


def is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str, host: str | None, cors_origins: Collection[str]) -> bool:
    """Whether a page of `origin` may change state here: it is this server's own origin (its
    host and port are the request's `Host`), or a listed CORS origin (pure)."""
    if origin in cors_origins:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == (host or "").lower()


class OriginCheck:
    """ASGI middleware: `403` for a state-changing request from another origin's page."""

    def __init__(self, app: ASGIApp, cors_origins: Collection[str]) -> None:
        self.app = app
        self.cors_origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not origin_allowed(
                origin, headers.get("host"), self.cors_origins
            ):
                message = f"requests from pages of {origin!r} may not change anything here"
                await JSONResponse({"detail": message}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def add_browser_guards(
    app: FastAPI,
    allowed_hosts: Sequence[str],
    cors_origins: Sequence[str],
    *,
    methods: Sequence[str] = ("GET", "POST", "DELETE"),
    expose_headers: Sequence[str] = (),
) -> None:
    """The three guards, outermost first: Host, CORS, Origin (`add_middleware` puts each new
    one outside the ones before it)."""
    app.add_middleware(OriginCheck, cors_origins=cors_origins)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=list(methods),
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=list(expose_headers),
        max_age=600,
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts) or ["*"])
