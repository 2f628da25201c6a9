"""``trainer.precision: auto``: bf16-mixed on a GPU or on a CPU that computes bf16 in hardware (AMX, AVX512-BF16),
else fp32 (torch emulates bf16 elsewhere, slower than fp32). Apart from ``hostcheck.py``, which the programs'
first frame imports before torch."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16), where bf16 autocast pays.

    Elsewhere torch emulates bf16 on the CPU, which is slower than fp32, so ``precision: auto`` stays fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``trainer.precision`` for Lightning: ``auto`` is bf16-mixed on a GPU or a bf16-capable CPU, else 32-true."""
    precision = str(trainer_cfg.precision)
    if precision != "auto":
        return precision
    accelerator = str(trainer_cfg.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed"
    return "bf16-mixed" if accelerator in ("cpu", "auto") and cpu_has_native_bf16() else "32-true"
