"""Host settings that decide CPU training speed, checked once per run (readers of /sys, no torch).

Why: a NARM training step allocates ``batch x n_items`` score and gradient blocks (88 MiB each at batch 512
on DIGINETICA). glibc hands blocks over 32 MiB straight to the kernel and back every step, so every step faults
them in afresh; with a huge ``mmap_threshold`` they come from the heap and with a huge ``trim_threshold`` the heap
keeps them, so the next step reuses memory already in place (ml-100k epoch 20-22 s -> 15-17 s on a 2-core Xeon;
either alone does not help, ``trim_threshold`` alone was 2x slower). Tunables must be set before the process
starts: ``narm-train`` and ``narm-sweep`` restart themselves with them (``entry.with_heap_tunables``); the advice
is for the opted-out.

glibc's huge pages (``glibc.malloc.hugetlb=1``, ``HUGETLB_TUNABLE``) are no longer among them (2026-12-07, issue
36): with the heap thresholds a steady ml-100k epoch is the same with or without them (11.9 s both), while the
first epoch of every process paid 2.8 s more (17.7 vs 14.9 s): on the cloud VMs measured, a huge page's first touch
costs ~1.7 s a GiB (8 GiB touched: 14.0 s against 1.7 s in 4 KiB pages). At DIGINETICA's shape they still save
7% of a steady step (100 vs 107 ms, ``make bench-hugepages``): docs/performance.md says when to add them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
RECOMMENDED_TUNABLES = ("glibc.malloc.mmap_threshold=4294967296", "glibc.malloc.trim_threshold=17179869184")


def thp_mode(text: str | None = None) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``); None where unknown."""
    if text is None:
        try:
            text = THP_ENABLED.read_text()
        except OSError:  # not Linux, or /sys hidden
            return None
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else None


def slow_allocation_advice(mode: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """A one-paragraph warning when big CPU tensors will be faulted in 4 KiB pages and one env var would fix it."""
    env = os.environ if env is None else env
    tunables = env.get("GLIBC_TUNABLES", "").split(":")
    if mode != "madvise" or all(t in tunables for t in RECOMMENDED_TUNABLES):
        return None
    return (f"CPU steps run ~1.3-1.5x faster here started with GLIBC_TUNABLES={':'.join(RECOMMENDED_TUNABLES)} "
            "(narm-train sets it itself; docs/performance.md).")


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str, text: str | None) -> str | None:
    if text is None:
        text = CPUINFO.read_text() if CPUINFO.exists() else ""
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    import platform

    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty elsewhere)."""
    return set((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The host kind a speed figure holds for: vendor, family and model, and the bf16 units (AMX tiles, AVX512-BF16
    instructions, or neither), e.g. ``AMD family 25 model 17, AVX512-BF16, no AMX``; the model name alone does not
    tell (one name covers Xeons with and without AMX)."""
    text = cpuinfo if cpuinfo is not None else (CPUINFO.read_text() if CPUINFO.exists() else "")
    vendor = _cpuinfo_field("vendor_id", text) or "unknown"
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor)
    flags = cpu_flags(text)
    units = ("AMX" if "amx_bf16" in flags else
             "AVX512-BF16, no AMX" if "avx512_bf16" in flags else "no bf16 units")
    return (f"{vendor} family {_cpuinfo_field('cpu family', text) or '?'} model "
            f"{_cpuinfo_field('model', text) or '?'}, {units}")


def cpu_description(cpuinfo: str | None = None) -> str:
    """``<model>, <n> cores[, AMX]``: what a timing needs beside it (the same model name covers hosts with and
    without AMX, which doubles bf16 matmuls; the cores are those this process may use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    amx = ", AMX" if "amx_bf16" in cpu_flags(cpuinfo) else ""
    return f"{cpu_model(cpuinfo)}, {cores} cores{amx}"


_host_warned = False  # a sweep runs many trials in one process: the advice comes once


def warn_host_once() -> None:
    """The huge-page advice, once per process (a sweep runs many trials in one)."""
    global _host_warned
    advice = None if _host_warned else slow_allocation_advice(thp_mode())
    if advice:
        log.warning(advice)
    _host_warned = True
