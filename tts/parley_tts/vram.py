"""GPU memory for the TTS process: a cap applied through torch, and a pure admission check.

`fits` is the decision (pure, tested without a GPU); `VramGuard` is the thin adapter that
asks torch what is in use and applies the cap with `set_per_process_memory_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3


class VramError(RuntimeError):
    """A model cannot be placed on the GPU (no CUDA, or it would not fit under the cap)."""


def fits(cap_gib: float, in_use_gib: float, need_gib: float) -> tuple[bool, str]:
    """Would a model needing `need_gib` fit under `cap_gib` with `in_use_gib` already taken?"""
    free = cap_gib - in_use_gib
    if need_gib <= free:
        return True, f"{need_gib:.1f} GiB fits: {free:.1f} of {cap_gib:.1f} GiB free"
    return False, (
        f"needs {need_gib:.1f} GiB but only {max(free, 0):.1f} of the {cap_gib:.1f} GiB cap "
        f"is free ({in_use_gib:.1f} GiB in use)"
    )


@dataclass
class VramGuard:
    """`cuda` is `torch.cuda` (passed in, so the CPU-only server never imports torch)."""

    cuda: Any
    cap_gib: float | None
    device: int = 0

    def total_gib(self) -> float:
        return float(self.cuda.get_device_properties(self.device).total_memory) / GIB

    def in_use_gib(self) -> float:
        return float(self.cuda.memory_reserved(self.device)) / GIB

    def apply_cap(self) -> None:
        if not self.cuda.is_available():
            raise VramError(
                "no CUDA device is visible to torch (is the GPU allocated to this pod?)"
            )
        if self.cap_gib is None:
            return
        total = self.total_gib()
        if self.cap_gib > total:
            raise VramError(f"VRAM cap {self.cap_gib:.1f} GiB exceeds the GPU's {total:.1f} GiB")
        self.cuda.set_per_process_memory_fraction(self.cap_gib / total, self.device)

    def admit(self, what: str, need_gib: float) -> None:
        cap = self.cap_gib if self.cap_gib is not None else self.total_gib()
        ok, message = fits(cap, self.in_use_gib(), need_gib)
        if not ok:
            raise VramError(f"refusing to load {what}: {message}")
