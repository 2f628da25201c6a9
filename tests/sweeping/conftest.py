"""Fixtures for the sweeper tests: run the toy Hydra app as a real ``-m`` subprocess in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from pg_cluster import PostgresUnavailable, postgres_url

ROOT = Path(__file__).resolve().parents[2]
TOY_APP = Path(__file__).resolve().parent / "toy_app" / "app.py"


def toy_command(*overrides: str) -> list[str]:
    """The command line of a toy sweep (nice: the CI machine is shared)."""
    return ["nice", sys.executable, str(TOY_APP), "-m", *overrides]


def toy_env() -> dict[str, str]:
    """PYTHONPATH with the repo root so Hydra finds ``hydra_plugins`` and ``narm_lightning``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def run_parallel_workers(tmp_path: Path, args: list[str], workers: int = 2, timeout: float = 600) -> None:
    """Start ``workers`` toy sweeps on one study at once (sweep folders multirun/w0, w1, ...); all must succeed."""
    procs = [
        subprocess.Popen(toy_command(*args, f"hydra.sweep.dir=multirun/w{i}"), cwd=tmp_path, env=toy_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]


@pytest.fixture
def run_toy(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a toy sweep with cwd=tmp_path; ``check=False`` to inspect a failing sweep."""

    def run(*overrides: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            toy_command(*overrides), cwd=tmp_path, env=toy_env(), capture_output=True, text=True, timeout=600
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"toy sweep failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
            )
        return proc

    return run


@pytest.fixture
def load_toy_study(tmp_path: Path) -> Callable[[], optuna.Study]:
    """The toy study from its default storage (``<cwd>/optuna/toy.db``)."""

    def load() -> optuna.Study:
        return optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'optuna' / 'toy.db'}")

    return load


@pytest.fixture(scope="session")
def postgres_storage() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL database shared by the session's tests (each uses its own study name).

    ``$NARM_TEST_POSTGRES_URL`` if set, else a throwaway local server (see ``pg_cluster``); skips when
    neither the server binaries nor the psycopg2 driver are there.
    """
    try:
        with postgres_url() as url:
            yield url
    except PostgresUnavailable as exc:
        if os.environ.get("NARM_REQUIRE_POSTGRES") == "1":  # CI: the distributed-sweep tests must never skip
            pytest.fail(f"no PostgreSQL: {exc} (NARM_REQUIRE_POSTGRES=1)")
        pytest.skip(f"no PostgreSQL: {exc}")
