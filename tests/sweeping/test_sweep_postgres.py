"""Distributed sweeps through PostgreSQL: real workers, a real server (skipped where PostgreSQL is absent)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, run_parallel_workers, toy_env
from optuna.trial import TrialState

from narm_lightning.errors import ConfigError
from narm_lightning.sweeping.storage import make_storage, study_lock

_HOLD_LOCK = """
import sys, time
from narm_lightning.sweeping.storage import study_lock
with study_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_postgres_lock_excludes_other_workers_and_dies_with_its_holder(postgres_storage: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, postgres_storage],
        cwd=ROOT,
        env=toy_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        acquired = threading.Event()

        def second_worker() -> None:
            with study_lock(postgres_storage):
                acquired.set()

        thread = threading.Thread(target=second_worker, daemon=True)
        thread.start()
        assert not acquired.wait(1.5), "a second worker got the lock while another process held it"
        holder.kill()  # a worker that dies inside the critical section must not block the study forever
        assert acquired.wait(30), "the lock of a killed worker was never released"
        thread.join(10)
    finally:
        holder.kill()
        holder.wait(30)


def need_psycopg2() -> None:
    """The driver of the ``[postgres]`` extra (in ``[dev]``): skipped without it, failed under CI's requirement."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        if os.environ.get("NARM_REQUIRE_POSTGRES") == "1":
            pytest.fail("the psycopg2 driver is not installed (NARM_REQUIRE_POSTGRES=1)")
        pytest.skip("the psycopg2 driver is not installed")


def test_unreachable_postgres_storage_is_one_clear_config_error() -> None:
    need_psycopg2()
    url = "postgresql+psycopg2://narm:s3cret@127.0.0.1:1/nowhere"  # port 1: nothing listens there
    with pytest.raises(ConfigError, match=r"hydra.sweeper.storage: cannot connect to") as info:
        with study_lock(url):
            pass
    assert "s3cret" not in str(info.value) and "postgresql://user@host:port/db" in str(info.value)


def test_missing_postgres_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if psycopg2-binary were not installed
    with pytest.raises(ConfigError, match=r"needs the PostgreSQL driver.*pip install -e '\.\[postgres\]'"):
        with study_lock("postgresql://narm@127.0.0.1:1/no_driver_here"):
            pass


def test_storage_without_lock_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    url = "mysql+pymysql://narm:s3cret@db.invalid/sweeps"  # never connected to: there is no lock to take
    for _ in range(2):
        with study_lock(url):
            pass
    warnings = [r.getMessage() for r in caplog.records if "no cross-worker lock" in r.getMessage()]
    assert len(warnings) == 1 and "s3cret" not in warnings[0] and "n_trials" in warnings[0]


def test_two_workers_share_one_postgres_study(postgres_storage: str, tmp_path: Path) -> None:
    study_name = f"toy_pg_{uuid.uuid4().hex[:8]}"  # the database may be shared (NARM_TEST_POSTGRES_URL)
    n_trials = 6
    args = [
        "hydra/sweeper/sampler=random",
        f"rendezvous={tmp_path / 'met'}",  # every trial waits until both workers hold one: both get trials
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={postgres_storage}",
        f"hydra.sweeper.study_name={study_name}",
        "hydra.sweeper.heartbeat_interval=2",
    ]
    run_parallel_workers(tmp_path, args)
    trials = optuna.load_study(study_name=study_name, storage=postgres_storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials  # exactly n_trials, none extra
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.value == (t.params["x"] - 2) ** 2 for t in trials)  # the objective ran with the sampled x
    by_worker = {w: [t for t in trials if f"/multirun/{w}/" in t.user_attrs["output_dir"]] for w in ("w0", "w1")}
    assert all(by_worker.values()), f"one worker ran no trial: { {w: len(t) for w, t in by_worker.items()} }"
    assert sum(len(t) for t in by_worker.values()) == n_trials
    for worker, own in by_worker.items():  # each worker's job folders are exactly its trials
        job_dirs = [d for d in (tmp_path / "multirun" / worker).iterdir() if d.is_dir() and d.name.isdigit()]
        assert len(job_dirs) == len(own)


def test_a_server_that_accepts_but_never_answers_is_a_clear_error_not_a_hang() -> None:
    """The red-team's silent server: a socket that accepts connections and says nothing. libpq's connect_timeout
    ends the wait; the sweep gets one paragraph naming the storage (it hung until killed before), from the study's
    lock and from Optuna's storage alike. The URL's own connect_timeout (1 s here) is the one libpq gets, not the
    default 20 s, on both engines."""
    import socket
    import time

    need_psycopg2()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    url = f"postgresql://narm@127.0.0.1:{port}/x?connect_timeout=1"

    def lock() -> None:
        with study_lock(url):
            pass

    try:
        for opens, named in ((lock, "cannot connect to 'postgresql://"),
                             (lambda: make_storage(url, None, None), "cannot open 'postgresql\\+psycopg2://")):
            started = time.monotonic()
            with pytest.raises(ConfigError, match=rf"hydra.sweeper.storage: {named}narm@127.0.0.1:{port}/x"
                                                  rf"\?connect_timeout=1'.*timeout"):
                opens()
            assert time.monotonic() - started < 15  # a bound on a hang, not a speed figure: the default waits 20 s
    finally:
        silent.close()


def test_libpq_settings_in_the_url_win_over_the_defaults() -> None:
    """Without a setting in the URL the storage's timeouts apply; one the URL gives is left to the URL (SQLAlchemy
    would let the defaults override it)."""
    from narm_lightning.sweeping.storage import PG_CONNECT_ARGS, pg_connect_args

    assert pg_connect_args("postgresql://u@h/db") == PG_CONNECT_ARGS and PG_CONNECT_ARGS["connect_timeout"] == 20
    chosen = pg_connect_args("postgresql://u@h/db?connect_timeout=5&options=-c%20statement_timeout%3D1000")
    assert "connect_timeout" not in chosen and "options" not in chosen
    assert chosen["keepalives"] == 1


def test_the_documented_postgresql_url_uses_the_installed_driver() -> None:
    from narm_lightning.sweeping.storage import with_postgres_driver

    assert with_postgres_driver("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
    assert with_postgres_driver("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_postgres_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"  # chosen: kept
    assert with_postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
