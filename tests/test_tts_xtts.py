"""XTTS-v2 and the VRAM cap, without a GPU (torch and coqui-tts are not installed here).

What is checked is what a CPU-only machine can check: the weights directory, the refusal to
load without torch, the pure `fits` decision, `VramGuard` against a fake `torch.cuda`, and
that `parley tts serve` and the TTS app refuse to start on incomplete weights.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from parley_tts.config import TTSSettings
from parley_tts.server import create_tts_app
from parley_tts.voices import ModelNotFoundError
from parley_tts.vram import GIB, VramError, VramGuard, fits
from parley_tts.xtts import XTTS_FILES, check_xtts_dir, load_xtts
from tests.support.runtime_host import free_port

REPO = Path(__file__).resolve().parents[1]


def xtts_dir(root: Path, files: tuple[str, ...] | list[str]) -> Path:
    """A checkpoint directory holding empty files with the given names."""
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).write_bytes(b"")
    return root


# -- the weights directory -------------------------------------------------------------------


def test_unconfigured_xtts_dir_says_how_to_configure_it() -> None:
    with pytest.raises(ModelNotFoundError, match="PARLEY_TTS_XTTS_MODEL_DIR"):
        check_xtts_dir("")


def test_missing_xtts_dir_names_the_dir_and_every_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError) as caught:
        check_xtts_dir(str(missing))
    message = str(caught.value)
    assert str(missing) in message
    assert f"missing {', '.join(XTTS_FILES)}" in message
    assert "never downloads" in message


def test_incomplete_xtts_dir_names_exactly_the_missing_files(tmp_path: Path) -> None:
    present = [XTTS_FILES[0], XTTS_FILES[2]]  # config.json, vocab.json
    absent = [name for name in XTTS_FILES if name not in present]
    with pytest.raises(ModelNotFoundError) as caught:
        check_xtts_dir(str(xtts_dir(tmp_path / "xtts", present)))
    message = str(caught.value)
    assert f"missing {', '.join(absent)} " in message
    for name in present:
        assert name not in message


def test_complete_xtts_dir_is_accepted(tmp_path: Path) -> None:
    folder = xtts_dir(tmp_path / "xtts", XTTS_FILES)
    assert check_xtts_dir(str(folder)) == folder


def test_load_xtts_without_torch_names_the_extra(tmp_path: Path) -> None:
    if all(importlib.util.find_spec(module) is not None for module in ("torch", "TTS")):
        reason = "torch and coqui-tts are installed here: the refusal to load cannot be shown"
        print(reason)
        pytest.skip(reason)
    folder = xtts_dir(tmp_path / "xtts", XTTS_FILES)
    with pytest.raises(VramError) as caught:
        load_xtts(str(folder), "cuda", cap_gib=6.0, need_gib=3.0)
    message = str(caught.value)
    assert "torch" in message
    assert "coqui-tts" in message
    assert "'xtts' extra" in message
    assert isinstance(caught.value.__cause__, ImportError)


def test_load_xtts_checks_the_weights_before_torch(tmp_path: Path) -> None:
    """Missing weights are reported as missing weights, whatever is installed."""
    with pytest.raises(ModelNotFoundError, match=r"model\.pth"):
        load_xtts(str(xtts_dir(tmp_path / "xtts", ["config.json"])), "cuda", None, 3.0)


# -- the pure decision -----------------------------------------------------------------------


def test_fits_with_room_to_spare() -> None:
    ok, message = fits(cap_gib=8.0, in_use_gib=2.0, need_gib=3.0)
    assert ok
    assert message == "3.0 GiB fits: 6.0 of 8.0 GiB free"


def test_fits_exactly() -> None:
    ok, message = fits(cap_gib=6.0, in_use_gib=3.0, need_gib=3.0)
    assert ok
    assert "3.0 of 6.0 GiB free" in message


def test_does_not_fit_names_the_need_the_free_amount_and_the_cap() -> None:
    ok, message = fits(cap_gib=6.0, in_use_gib=4.5, need_gib=3.0)
    assert not ok
    assert message == "needs 3.0 GiB but only 1.5 of the 6.0 GiB cap is free (4.5 GiB in use)"


def test_over_committed_cap_reports_nothing_free() -> None:
    ok, message = fits(cap_gib=6.0, in_use_gib=7.0, need_gib=0.5)
    assert not ok
    assert "only 0.0 of the 6.0 GiB cap is free (7.0 GiB in use)" in message


# -- VramGuard against a fake torch.cuda -------------------------------------------------------


class _Properties:
    def __init__(self, total_memory: int) -> None:
        self.total_memory = total_memory


class FakeCuda:
    """Stands in for `torch.cuda` on a machine with no GPU: the few calls `VramGuard` makes."""

    def __init__(
        self, available: bool = True, total_gib: float = 24.0, reserved_gib: float = 0.0
    ) -> None:
        self.available = available
        self.total = int(total_gib * GIB)
        self.reserved = int(reserved_gib * GIB)
        self.fractions: list[tuple[float, int]] = []
        self.queried: list[int] = []

    def is_available(self) -> bool:
        return self.available

    def get_device_properties(self, device: int) -> _Properties:
        self.queried.append(device)
        return _Properties(self.total)

    def memory_reserved(self, device: int) -> int:
        self.queried.append(device)
        return self.reserved

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.fractions.append((fraction, device))


def test_no_cuda_is_refused() -> None:
    cuda = FakeCuda(available=False)
    with pytest.raises(VramError, match="no CUDA device"):
        VramGuard(cuda, cap_gib=6.0).apply_cap()
    assert cuda.fractions == []


def test_no_cuda_is_refused_even_without_a_cap() -> None:
    with pytest.raises(VramError, match="CUDA"):
        VramGuard(FakeCuda(available=False), cap_gib=None).apply_cap()


def test_cap_is_applied_as_a_fraction_of_the_gpu() -> None:
    cuda = FakeCuda(total_gib=24.0)
    VramGuard(cuda, cap_gib=6.0, device=1).apply_cap()
    assert cuda.fractions == [(0.25, 1)]
    assert set(cuda.queried) == {1}


def test_no_cap_leaves_the_gpu_uncapped() -> None:
    cuda = FakeCuda(total_gib=24.0)
    VramGuard(cuda, cap_gib=None).apply_cap()
    assert cuda.fractions == []


def test_cap_above_the_gpu_is_refused() -> None:
    cuda = FakeCuda(total_gib=16.0)
    with pytest.raises(VramError) as caught:
        VramGuard(cuda, cap_gib=24.0).apply_cap()
    assert str(caught.value) == "VRAM cap 24.0 GiB exceeds the GPU's 16.0 GiB"
    assert cuda.fractions == []


def test_admit_refuses_what_would_go_over_the_cap() -> None:
    guard = VramGuard(FakeCuda(total_gib=24.0, reserved_gib=4.0), cap_gib=6.0)
    with pytest.raises(VramError) as caught:
        guard.admit("XTTS-v2", need_gib=3.0)
    message = str(caught.value)
    assert message.startswith("refusing to load XTTS-v2: ")
    assert "needs 3.0 GiB" in message
    assert "only 2.0 of the 6.0 GiB cap is free" in message
    assert "4.0 GiB in use" in message


def test_admit_accepts_what_fits_under_the_cap() -> None:
    guard = VramGuard(FakeCuda(total_gib=24.0, reserved_gib=3.0), cap_gib=6.0)
    guard.admit("XTTS-v2", need_gib=3.0)  # exactly fits: no exception


def test_admit_without_a_cap_is_against_the_whole_gpu() -> None:
    guard = VramGuard(FakeCuda(total_gib=8.0, reserved_gib=4.0), cap_gib=None)
    guard.admit("XTTS-v2", need_gib=4.0)  # 4 + 4 = 8: fits the GPU exactly
    with pytest.raises(VramError, match=r"only 4\.0 of the 8\.0 GiB cap is free"):
        guard.admit("XTTS-v2", need_gib=4.5)


# -- the server refuses to start on incomplete weights ---------------------------------------


def test_parley_tts_serve_refuses_missing_weights() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parley",
            "tts",
            "serve",
            "--xtts-model-dir",
            "/nowhere",
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr
    assert "/nowhere" in result.stderr
    assert "model.pth" in result.stderr


async def test_tts_app_with_incomplete_xtts_dir_fails_at_startup(tmp_path: Path) -> None:
    folder = xtts_dir(tmp_path / "xtts", ["config.json", "vocab.json"])
    app = create_tts_app(TTSSettings(xtts_model_dir=str(folder), port=free_port()))
    entered = False
    with pytest.raises(ModelNotFoundError) as caught:
        async with app.router.lifespan_context(app):
            entered = True
    assert not entered, "the app started serving without its XTTS weights"
    message = str(caught.value)
    assert str(folder) in message
    assert "missing model.pth, speakers_xtts.pth " in message
    # it failed before loading anything: not even the default Piper voice
    assert app.state.manager.resident() == []
    assert app.state.manager.stats.loads == 0
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "vocab.json"]
