"""`parley runtime drain`: ask a runtime to stop admitting and, with `--wait`, wait until its
last session has ended. It is the runtime pod's `preStop` hook (an exec of this command, so
the image needs no curl): Kubernetes sends SIGTERM only once it returns."""

from __future__ import annotations

import time

import httpx

from parley.scos import Scos


def say(message: str) -> None:
    print(f"[parley drain] {message}", flush=True)


def drain_runtime(url: str, wait: bool, timeout_s: float, poll_s: float = 1.0) -> int:
    url = url.rstrip("/")
    try:
        response = httpx.post(f"{url}/v1/drain", timeout=5)
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
