"""Shared fixtures: the real data beside the checkout, and tiny synthetic datasets for fast runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SHARED_DATA, need_shared

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tools the tests run keep settings and caches in the home folder (W&B's ``~/.config/wandb``, matplotlib's):
    point them at this session's temp folder, inherited by every subprocess, so a test run writes nothing of the
    user's."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="narm-tests-home-"))
    for name, sub in (("WANDB_CONFIG_DIR", "wandb-config"), ("WANDB_CACHE_DIR", "wandb-cache"),
                      ("WANDB_DATA_DIR", "wandb-data"), ("WANDB_ARTIFACT_DIR", "wandb-artifacts"),
                      ("MPLCONFIGDIR", "matplotlib")):
        os.environ[name] = str(home / sub)


@pytest.fixture(autouse=True)
def _no_child_programs_under_mutation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Under ``make mutate`` (mutmut sets MUTANT_UNDER_TEST) a test that starts a Python child (train.py, sweep.py,
    a bench script, ``python -m narm_lightning...``) is skipped: the child would run the mutated copy without
    mutmut's bookkeeping (it fails on its missing config). The in-process tests of the same code still run."""
    if "MUTANT_UNDER_TEST" not in os.environ:
        yield
        return
    import subprocess

    real = subprocess.Popen

    class Guarded(real):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **kwargs):  # noqa: ANN001 - subprocess.Popen's own signature
            words = [str(a) for a in (args if isinstance(args, (list, tuple)) else [args])]
            if words and Path(words[0]).name.startswith("python"):
                pytest.skip("starts a Python child process (not under mutation testing)")
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Guarded)
    yield


@pytest.fixture(autouse=True)
def _no_wandb_service_leaks() -> Iterator[None]:
    """A W&B run in this process sets ``WANDB_SERVICE`` (its service's socket) in ``os.environ``: every later
    subprocess would inherit it and log to this process's service, not to its own folder (a sweep test then
    found no runs when it followed ``test_wandb.py``). Stop the service and forget it after each test."""
    had = "WANDB_SERVICE" in os.environ
    yield
    if not had and "WANDB_SERVICE" in os.environ:
        import wandb

        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only); absent, tests skip (or fail under NARM_REQUIRE_SHARED_DATA=1)."""
    need_shared(SHARED_DATA / "ml-100k" / "ml-100k.inter")
    return SHARED_DATA


def write_inter(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def tiny_root(tmp_path: Path) -> Path:
    """``<tmp>/tiny/tiny.inter``: 40 users walking a learnable cycle over 30 items (next = current + 1)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        start = int(rng.integers(0, 30))
        for t in range(12):
            rows.append((f"u{u}", f"i{(start + t) % 30}", float(t)))
    write_inter(tmp_path / "tiny" / "tiny.inter", rows)
    return tmp_path
