"""The interactive API docs pages (`/docs`, `/redoc`) and the schema they read
(`/openapi.json`): off unless asked for. They describe every route to whoever finds the server,
and nothing a client needs depends on them (the schema is still built in process by
`app.openapi()`, which tests use)."""

from __future__ import annotations

from typing import TypedDict


class DocsPages(TypedDict, total=False):
    docs_url: str | None
    redoc_url: str | None
    openapi_url: str | None


def api_docs(enabled: bool) -> DocsPages:
    """`FastAPI(...)` arguments: its defaults when enabled, no pages otherwise."""
    if enabled:
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}
