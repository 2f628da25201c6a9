"""Shared fixtures: the real data beside the checkout, and tiny synthetic datasets for fast runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import need_shared

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


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
