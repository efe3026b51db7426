"""The stacks `parley bench compare` measures, each a server process of its own on loopback,
both on the same LLM server and the same model files, and both sample the LLM with the same
seed (the bench's `--seed`), so that a question gets the same answer in both and run to run:

- `parley`: `parley runtime serve` with the embedded models (faster-whisper tiny.en, Silero
  VAD, Piper en_US-joe-medium) and its defaults, as `parley demo` runs it; ready at `/readyz`.
- `pipecat`: the stock Pipecat bot (`pipecat_bot.py`: Whisper tiny.en, Silero VAD with Smart
  Turn, Piper joe, Pipecat's default turn handling) under its own virtual environment, which
  is created on first use; ready at `/healthz` once its models are warm.
"""

from __future__ import annotations

from collections.abc import Callable

from parley.local_llm import LLM_MODEL_NAME, LOG_DIR
from parley_bench.capacity import RuntimeProcess
from parley_bench.child_server import ChildServer, free_port
from parley_bench.compare.pipecat_env import ensure_pipecat_python, pipecat_bot_command
from parley_bench.peer import PARLEY_SIGNALLING, SMALL_WEBRTC_SIGNALLING, Signalling

STACKS = ("parley", "pipecat")
SIGNALLING: dict[str, Signalling] = {
    "parley": PARLEY_SIGNALLING,
    "pipecat": SMALL_WEBRTC_SIGNALLING,
}
#: Loading the models (and, for Pipecat, warming them) on two busy cores.
START_TIMEOUT_S = 300.0


def stack_server(
    name: str, llm_url: str, llm_slots: int, llm_seed: int, progress: Callable[[str], None]
) -> ChildServer:
    """The server process of stack `name` (not started yet). For Pipecat this first makes
    sure its virtual environment exists (a pip install the first time: minutes). `llm_slots`:
    the LLM server's slots, when the bench started it (Parley keeps one per session)."""
    if name == "parley":
        env = {"PARLEY_LLM_SEED": str(llm_seed), "PARLEY_LLM_SLOTS": str(llm_slots)}
        return RuntimeProcess(llm_url, env, "compare-parley.log")
    if name == "pipecat":
        ensure_pipecat_python(progress)
        port = free_port()
        return ChildServer(
            "the Pipecat bot",
            pipecat_bot_command(port, llm_url, LLM_MODEL_NAME, seed=llm_seed),
            f"http://127.0.0.1:{port}",
            "/healthz",
            LOG_DIR / "compare-pipecat.log",
        )
    raise ValueError(f"unknown stack {name!r}: one of {', '.join(STACKS)}")
