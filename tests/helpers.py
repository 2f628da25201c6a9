"""Composing the project's Hydra config in tests, exactly as train.py would."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from narm_lightning.config.schema import register

REPO = Path(__file__).resolve().parents[1]  # the checkout: train.py, sweep.py, bench/
# ../shared/data beside the checkout; NARM_SHARED_DATA names it from elsewhere (make mutate runs a copy of the tree)
SHARED_DATA = Path(os.environ.get("NARM_SHARED_DATA") or REPO / ".." / "shared" / "data").resolve()
CONF_DIR = REPO / "conf"


def compose_train(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def tiny_overrides(root: Path, *extra: str, gru_impl: str = "torch") -> list[str]:
    """A fast run on the ``tiny_root`` fixture: no progress bars, no loggers; ``nn.GRU`` unless a test asks for
    the fused GRU (``gru_impl="auto"``, the default of real runs): compiling its kernels costs each new process a
    few seconds, which most tests do not test. ``tests/model/test_gru.py``, the RecBole checkpoint, exact resume after
    SIGKILL, SIGINT and DDP run it."""
    return [
        f"model.gru_impl={gru_impl}",
        "data.dataset=tiny",
        f"data.root={root}",
        "data.extra_roots=[]",
        "data.download=false",
        "train_batch_size=64",
        "eval_batch_size=64",
        "model.embedding_size=16",
        "model.hidden_size=16",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *extra,
    ]


def need_shared(path: Path) -> Path:
    """``path`` under ``../shared/data``; where it is absent the test skips, or fails when
    ``NARM_REQUIRE_SHARED_DATA=1`` (CI sets it: the RecBole-parity tests must never pass by skipping)."""
    if not path.exists():
        message = f"shared data not available: {path}"
        if os.environ.get("NARM_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{message} (NARM_REQUIRE_SHARED_DATA=1)")
        pytest.skip(message)
    return path


def autograd_node_names(tensor: torch.Tensor) -> set[str]:
    """The class names of every autograd node behind ``tensor`` (e.g. to see which layer's backward ran)."""
    seen: dict[int, str] = {}
    stack = [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    return set(seen.values())


def bench_script(name: str) -> ModuleType:
    """``bench.<name>`` (``bench/`` is a package of the checkout: ``python -m bench.<name>``), imported."""
    return importlib.import_module(f"bench.{name}")


def bench_command(name: str, *args: str) -> list[str]:
    """``python -m bench.<name> args``, as the Makefile runs it: run it with ``cwd=REPO`` (or the checkout on
    ``PYTHONPATH``)."""
    return [sys.executable, "-m", f"bench.{name}", *args]
