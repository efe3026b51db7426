"""`parley demo`: the embedded default on one machine, on CPU.

Starts llama.cpp's `llama-server` with the SmolLM2-135M-Instruct GGUF (`parley.local_llm`),
then the runtime with in-process faster-whisper and Piper, and prints the address of the web
page. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from parley.local_llm import LLM_MODEL_NAME, LLMServer, say


def demo_settings(host: str, port: int, llm_url: str, llm_slots: int) -> dict[str, object]:
    """The runtime's settings in the demo. Its page is served to this machine's browser only:
    Host names other than the loopback ones (and `host`) are refused, so a web page whose name
    is re-pointed at 127.0.0.1 (DNS rebinding) cannot drive it; `PARLEY_ALLOWED_HOSTS` in the
    environment replaces that list."""
    from parley.security.browser import loopback_hosts

    settings: dict[str, object] = {
        "host": host,
        "port": port,
        "llm_url": llm_url,
        "llm_model": LLM_MODEL_NAME,
        "llm_slots": llm_slots,
        "ice_host_addresses": ["127.0.0.1"] if host in ("127.0.0.1", "localhost") else [],
    }
    if "PARLEY_ALLOWED_HOSTS" not in os.environ:
        settings["allowed_hosts"] = loopback_hosts(host)
    return settings


def run_demo(host: str = "127.0.0.1", port: int | None = None, llm_port: int = 8081) -> int:
    from parley.serve import serve_runtime
    from parley_runtime.models import ModelNotFoundError

    port = port or int(os.environ.get("PORT", "8080"))
    llm = LLMServer(llm_port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        llm.start()
        say("loading speech models (faster-whisper tiny.en, Silero VAD, Piper en_US-joe-medium)")
        return serve_runtime(
            demo_settings(host, port, llm.url, llm.slots),
            on_ready=lambda: say(f"ready. Ctrl-C stops everything.\nopen http://{host}:{port}"),
            drain_on_sigterm=False,
        )
    except (ModelNotFoundError, RuntimeError) as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping the LLM server")
        llm.stop()
