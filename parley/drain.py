"""`parley runtime drain`: ask a runtime to stop admitting and, with `--wait`, wait until its
last session has ended. It is the runtime pod's `preStop` hook (an exec of this command, so
the image needs no curl): Kubernetes sends SIGTERM only once it returns."""

from __future__ import annotations

import json
import os
import time

import httpx

from parley.scos import Scos
from parley.security.tokens import TokenSet


def say(message: str) -> None:
    print(f"[parley drain] {message}", flush=True)


def admin_headers() -> dict[str, str]:
    """The runtime's admin token, where the runtime's own settings name it
    (`PARLEY_ADMIN_TOKENS_FILE`, `PARLEY_ADMIN_TOKENS`): in a runtime pod, the `preStop` hook
    finds the operator's token there."""
    listed = json.loads(os.environ.get("PARLEY_ADMIN_TOKENS") or "[]")
    tokens = TokenSet(listed, os.environ.get("PARLEY_ADMIN_TOKENS_FILE", "")).tokens()
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


def drain_runtime(url: str, wait: bool, timeout_s: float, poll_s: float = 1.0) -> int:
    url = url.rstrip("/")
    try:
        response = httpx.post(f"{url}/v1/drain", headers=admin_headers(), timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        say(f"cannot drain {url}: {exc!r}")
        return 1
    active = int(response.json().get("active_sessions", 0))
    say(f"{url} is draining; {active} session(s) live")
    if not wait:
        return 0
    deadline = time.monotonic() + timeout_s
    while active and time.monotonic() < deadline:
        time.sleep(poll_s)
        try:
            active = Scos.model_validate(
                httpx.get(f"{url}/v1/scos", timeout=5).json()
            ).sessions.active
        except (httpx.HTTPError, ValueError) as exc:
            say(f"cannot read {url}/v1/scos ({exc!r}); still waiting")
    if active:
        say(f"{active} session(s) still live after {timeout_s:g} s; leaving them to SIGTERM")
        return 0
    say("no live sessions left")
    return 0
