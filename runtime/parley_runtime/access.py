"""Who may do what on the runtime's HTTP API (DESIGN.md, Contracts: Auth).

- **Create a session**: anyone, unless API tokens are configured (`api_tokens`,
  `api_tokens_file`); then `Authorization: Bearer <token>` with one of them or an admin token.
  Missing or wrong: `401` with `WWW-Authenticate: Bearer`.
- **Admin** (drain and undrain, list the sessions, read or end any session): an admin token
  (`admin_tokens`, `admin_tokens_file`; the operator mounts one from a Secret). With none
  configured, only *local* clients (loopback, not forwarded by a proxy; see
  `parley.security.clients`): `parley demo`, a pod's own `preStop` hook, a port-forward.
  Anyone else gets `403`: no token could help.
- **Its own session**: the secret the session's creator got (`"secret"` in the answer, and
  the `Parley-Session-Secret` header) as `Authorization: Bearer <secret>`, to read it or end it.
- **Rate**: at most `session_rate_per_minute` creations per client per minute (`429` with
  `Retry-After`), counted by client address (IPv6 by /64; behind a trusted proxy, the address it
  forwards). Local clients (a benchmark on this machine) and admin tokens (a load test given
  one) are not limited: the limit guards the pod against remote clients.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from fastapi import HTTPException, Request

from parley.security.clients import Client, client_of, parse_networks, rate_key
from parley.security.ratelimit import RateLimiter
from parley.security.tokens import TokenSet, bearer_token
from parley_runtime.config import RuntimeSettings

SECRET_HEADER = "Parley-Session-Secret"
_CHALLENGE = 'Bearer realm="parley"'


class Owned(Protocol):
    """Something a secret proves the ownership of (a session)."""

    def owned_by(self, presented: str | None) -> bool: ...


class Access:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.api = TokenSet(
            (t.get_secret_value() for t in settings.api_tokens), settings.api_tokens_file
        )
        self.admin = TokenSet(
            (t.get_secret_value() for t in settings.admin_tokens), settings.admin_tokens_file
        )
        self.trusted = parse_networks(settings.trusted_proxies)
        rate = settings.session_rate_per_minute
        self.limiter = RateLimiter(rate, 60.0) if rate else None

    def client(self, request: Request) -> Client:
        peer = request.client.host if request.client else None
        return client_of(peer, request.headers, self.trusted)

    def is_admin(self, request: Request) -> bool:
        if self.admin.configured:
            return self.admin.matches(_token(request))
        return self.client(request).local

    def require_admin(self, request: Request) -> None:
        if self.is_admin(request):
            return
        if not self.admin.configured:
            raise HTTPException(
                403,
                "admin requests are served to local clients only: this runtime has no admin "
                "token (PARLEY_ADMIN_TOKENS or PARLEY_ADMIN_TOKENS_FILE)",
            )
        raise _unauthorized(request, "an admin token is needed")

    def require_creator(self, request: Request) -> None:
        if not self.api.configured:
            return
        token = _token(request)
        if not (self.api.matches(token) or self.admin.matches(token)):
            raise _unauthorized(request, "a session needs an API token")

    def require_owner(self, request: Request, owned: Owned) -> None:
        """The session's own secret, or admin rights."""
        if owned.owned_by(_token(request)) or self.is_admin(request):
            return
        raise _unauthorized(request, "this needs the session's secret or an admin token")

    def count_creation(self, request: Request) -> None:
        """Count one session creation against the client's rate; `429` over it."""
        client = self.client(request)
        if self.limiter is None or client.local or self.admin.matches(_token(request)):
            return
        wait = self.limiter.hit(rate_key(client.address), time.monotonic())
        if wait is not None:
            raise HTTPException(
                429,
                f"too many sessions from {client.address}: at most {self.limiter.limit} a minute",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


def _token(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def _unauthorized(request: Request, message: str) -> HTTPException:
    challenge = _CHALLENGE + (', error="invalid_token"' if _token(request) else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})
