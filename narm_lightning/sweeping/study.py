"""Study management: storage location, resume, heartbeats, stale trials, trial counting and locking.

Semantics (documented for users in the sweeper's docstring):

* ``storage: null`` -> ``sqlite:///<original cwd>/optuna/<study_name>.db``: stable across invocations
  (``hydra.sweep.dir`` is timestamped), so running the same command again continues the study.
* A trial counts toward ``n_trials`` once it is COMPLETE, PRUNED or FAILED. A trial left RUNNING by a
  killed process stops getting heartbeats; after ``grace_period`` it is marked FAILED and re-queued with
  the same params (Optuna's RetryHeartbeatStaleTrialCallback). Such stale failures do NOT count.
* A re-queued trial whose run folder still holds its last checkpoint (and no result) continues that run
  (``resumable_run``): a stopped or killed study loses at most the epoch in flight, not the whole trial.
* Creating the study and counting + asking happen under an exclusive lock, so several workers on one
  study never create more than ``n_trials`` trials, and grid workers never pick the same point. SQLite
  (one machine): a file lock (``<db>.lock``). PostgreSQL (several machines): a transaction-level advisory
  lock in the database itself, released by the server if the worker dies. Other server databases have no
  lock: workers may overshoot by at most their in-flight trials (a warning says so).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import hashlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from narm_lightning.errors import ConfigError, first_line

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

PRUNER_ATTR = "narm_sweeper.pruner"
ERROR_ATTR = "error"
WORKER_ATTR = "worker"  # "<host>:<pid>" of the sweep process that asked for a trial
RUN_DIR_ATTR = "output_dir"  # the trial's run folder: the app records it as the run starts, else the sweeper
WANDB_RUN_ATTR = "wandb_run_id"  # a trial's W&B run (set by the app's trial: narm's pruning.py), for trials.csv
HOST_ATTR = "host_cpu"  # where the trial's run trained ("<model>, <n> cores[, AMX]"), recorded by the app
REPORT_ATTR = "report"  # what the task reported beside its objective ({"test mrr@10": 0.04, ...}): console, trials.csv
RESUME_REFUSED_ATTR = "resume_refused"  # this attempt's app refused to continue the stopped run: start over
# what one attempt at a grid point recorded: a re-queued copy must not inherit its predecessor's error or folder
ATTEMPT_ATTRS = (ERROR_ATTR, WORKER_ATTR, RUN_DIR_ATTR, WANDB_RUN_ATTR, RESUME_REFUSED_ATTR, HOST_ATTR)
MAX_STALE_RETRIES = 3  # a trial that kills its worker more often than this counts as a real failure
_PRUNER_MODULE = "optuna.pruners."


def default_storage_url(original_cwd: str | os.PathLike[str], study_name: str) -> str:
    """``sqlite:///<cwd>/optuna/<study_name>.db``, creating the folder (stable across invocations)."""
    folder = Path(original_cwd).resolve() / "optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (study_name + '.db')}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for other / in-memory storages."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    """An RDBStorage with heartbeats (so stale trials are detected) and retry of stale trials."""
    import optuna

    url = with_postgres_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # concurrent workers wait instead of erroring
    elif storage_backend(url) == "postgresql":
        engine_kwargs = {"connect_args": dict(PG_CONNECT_ARGS), "pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        if heartbeat_interval <= 0:
            raise ConfigError(
                f"hydra.sweeper.heartbeat_interval must be > 0 or null, got {heartbeat_interval}."
            )
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": _retry_callback(MAX_STALE_RETRIES),
        }
    check_sqlite_folder(url)
    database = sqlite_path(url)
    created = database is not None and not database.exists()
    if database is not None and not created:
        check_sqlite_database(database)
    try:
        with warnings.catch_warnings():  # "heartbeat_interval is experimental": Optuna's note, noise to a user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as exc:  # noqa: BLE001 - cleaned up, then named in one paragraph or raised as it was
        if created and database is not None:  # a new database half-made (a full disk): nothing left behind
            for leftover in (database, database.with_name(database.name + "-journal")):
                leftover.unlink(missing_ok=True)
        raise _storage_error(url, database, exc) from None


def _storage_error(url: str, database: Path | None, exc: Exception) -> Exception:
    """One paragraph for a storage that cannot be opened; anything unforeseen is returned as it was."""
    import sqlalchemy

    if isinstance(exc, ImportError):
        return ConfigError(
            f"hydra.sweeper.storage: '{redact_url(url)}' needs a database driver that is not installed "
            f"({exc}). Install it (PostgreSQL: pip install 'narm-lightning[postgres]'; MySQL: pip install pymysql "
            "and a mysql+pymysql:// URL), or use the default SQLite storage (storage=null)."
        )
    if database is not None and isinstance(exc, (sqlalchemy.exc.DatabaseError, OSError)):
        return ConfigError(f"hydra.sweeper.storage: the study database {database} cannot be opened or written "
                           f"({first_line(exc, 160)}); free space or fix permissions, or restore the file.")
    if isinstance(exc, (ValueError, sqlalchemy.exc.SQLAlchemyError)):
        return ConfigError(f"hydra.sweeper.storage: cannot open '{redact_url(url)}': {first_line(exc, 300)}")
    return exc


def check_sqlite_database(path: Path) -> None:
    """An existing SQLite study must be a whole SQLite database: garbage, a truncated file or a damaged page is
    one paragraph naming the file (SQLite's own ``quick_check``), before Optuna touches it."""
    import sqlite3

    problem = None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            problem = "; ".join(str(r[0]) for r in rows[:3])
    except sqlite3.Error as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(
            f"hydra.sweeper.storage: {path} is not a whole SQLite database ({problem}): damaged, truncated or "
            "another kind of file. Restore it from a copy, move it aside to start a new study, or name another study "
            "(hydra.sweeper.study_name)."
        )


def check_sqlite_folder(url: str) -> None:
    """A SQLite URL's folder must exist and be writable: a storage URL never creates folders (a typo would
    scatter databases), and /etc/passwd/x.db is no place for one."""
    path = sqlite_path(url)
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"hydra.sweeper.storage: the folder of '{url}' ({folder}) {what}; expected an existing "
                          "folder (a storage URL never creates folders): create it, or use storage=null.")
    if not os.access(folder, os.W_OK) or (path.exists() and not path.is_file()):
        raise ConfigError(f"hydra.sweeper.storage: cannot write the SQLite database {path} (no permission, or "
                          "not a regular file); choose a file in a folder you can write.")


def open_study(storage: Any, study_name: str, direction: str, sampler: Any, pruner: Any) -> optuna.Study:
    """Create the study or load it (``load_if_exists``), refusing a direction change."""
    import optuna

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,  # type: ignore[arg-type]
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != direction:
        raise ConfigError(
            f"hydra.sweeper.direction: study '{study_name}' in the storage was created with direction "
            f"'{stored}', but the config says '{direction}'. Use another study_name or the stored direction."
        )
    return study


SPACE_ATTR = "search_space"  # the study's params and fixed overrides, stored when it is created


def check_same_space(study: optuna.Study, identity: dict[str, Any]) -> None:
    """Store the search space in a new study; refuse a run whose space contradicts the stored one (a param
    swept with another distribution, on which Optuna fails mid-sweep), before any trial runs."""
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        if not study.trials:
            study.set_user_attr(SPACE_ATTR, identity)
        return
    # a param swept by both with another distribution: Optuna cannot mix those (params added, dropped or
    # fixed, and other fixed overrides, are what joining a study on purpose may do)
    differ = sorted(k for k in set(stored["params"]) & set(identity["params"])
                    if stored["params"][k] != identity["params"][k])
    if differ:
        said = [f"param {k}: stored {stored['params'][k]}, now {identity['params'][k]}" for k in differ]
        raise ConfigError(
            f"hydra.sweeper.study_name: study '{study.study_name}' was created with another search space "
            f"({'; '.join(said)}). Drop study_name to get the study of this command, or use another name."
        )


# A server that accepts a connection but never answers must not hang a sweep: libpq gives up connecting after
# connect_timeout seconds, and the server ends any statement after statement_timeout (ms): Optuna's and the
# lock's statements take milliseconds, the lock waits only while another worker asks or tells.
PG_CONNECT_ARGS = {"connect_timeout": 20, "options": "-c statement_timeout=300000",
                   "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) with the driver the ``[postgres]`` extra installs, psycopg2:
    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which that extra does not install."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme.lower() in ("postgresql", "postgres") else url


def storage_backend(url: str) -> str:
    """The database of an SQLAlchemy URL without its driver: ``postgresql+psycopg2://`` -> ``postgresql``."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and error messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by whoever opens it
        return url


# One key for the whole database: the schema is shared by all studies, and the critical sections are short.
_PG_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"narm_sweeper.study_lock", digest_size=8).digest(), "big", signed=True)
_warned_unlocked: set[str] = set()


@functools.lru_cache(maxsize=8)
def _lock_engine(url: str) -> Any:
    """A small engine per storage URL, separate from Optuna's (the lock must not share its transactions)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    # a fresh connection per lock (no stale ones), with the storage's timeouts
    return sqlalchemy.create_engine(with_postgres_driver(url), poolclass=NullPool, connect_args=dict(PG_CONNECT_ARGS))


@contextlib.contextmanager
def _postgres_lock(url: str) -> Iterator[None]:
    """``pg_advisory_xact_lock``: held until the transaction ends, released by the server if we die."""
    import sqlalchemy

    try:
        engine = _lock_engine(url)
        conn = engine.connect()
    except ImportError as exc:
        raise ConfigError(
            f"hydra.sweeper.storage: '{redact_url(url)}' needs the PostgreSQL driver psycopg2 ({exc}). "
            f"Install it with: pip install -e '.[postgres]' in a checkout, pip install 'narm-lightning[postgres]' "
            "otherwise (or pip install psycopg2-binary)."
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"hydra.sweeper.storage: cannot connect to '{redact_url(url)}': {str(exc).splitlines()[0]}. "
            f"Expected a reachable PostgreSQL database (postgresql://user@host:port/db) that already exists."
        ) from exc
    with conn, conn.begin():
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield


@contextlib.contextmanager
def study_lock(url: str) -> Iterator[None]:
    """Exclusive lock across the workers of a storage: a file lock for SQLite, an advisory lock for PostgreSQL.

    Other storages get no lock (a one-time warning): their workers may overshoot ``n_trials``.
    """
    if storage_backend(url) == "postgresql":
        with _postgres_lock(url):
            yield
        return
    path = sqlite_path(url)
    if path is None:
        if storage_backend(url) != "sqlite" and url not in _warned_unlocked:
            _warned_unlocked.add(url)
            log.warning(
                "Storage '%s' has no cross-worker lock (only SQLite and PostgreSQL do): parallel workers may "
                "finish a few more than n_trials trials.",
                redact_url(url),
            )
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back to Optuna's own (racy but bounded) behaviour
        yield
        return
    check_sqlite_folder(url)
    with open(f"{path}.lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail RUNNING trials whose heartbeat stopped; the storage callback re-queues them."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_workers_trials(study: optuna.Study, storage: Any, grace_seconds: float) -> list[int]:
    """Fail (and re-queue, as a stale trial) the RUNNING trials whose worker is gone.

    A worker killed with -9 leaves its trial RUNNING; heartbeats find it only after the grace period, and
    not at all if it died before its first beat. On this host the owner's pid answers at once; a trial that
    never got its owner recorded (killed within a millisecond of asking, or from an older version) is
    orphaned once it has been RUNNING for longer than ``grace_seconds``.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if WORKER_ATTR not in trial.user_attrs:
            started = trial.datetime_start or now
            if (now - started).total_seconds() <= grace_seconds:
                continue
        elif owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = trial_ids(storage, study, [trial])[0]
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            requeue(study, storage, trial_id)
            failed.append(trial.number)
    if failed:
        log.warning("Trial(s) %s were left RUNNING by a sweep process that no longer exists (killed?): failed "
                    "and queued to run again.", ", ".join(map(str, failed)))
    return failed


def requeue(study: optuna.Study, storage: Any, trial_id: int, max_retry: int | None = MAX_STALE_RETRIES) -> None:
    """Queue a FAILED trial to run again with the same params, as a stale one: it then does not count toward
    ``n_trials`` (``count_trials``) and a grid keeps its point. For trials whose worker died (at most
    ``max_retry`` times) or was stopped on purpose (``max_retry=None``: a stop is not the trial's fault)."""
    _retry_callback(max_retry)(study, storage.get_trial(trial_id))


def _retry_callback(max_retry: int | None) -> Any:
    """Optuna's stale-trial retry (it keeps ``failed_trial`` / ``retry_history``), minus the attempt's own
    user attrs (``ATTEMPT_ATTRS``), which Optuna copies: a completed re-run showed its predecessor's error."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
        retry(study, trial)

    return callback


@dataclass(frozen=True)
class ResumableRun:
    """A re-queued trial's predecessor whose run can go on: its folder and the values it reported."""

    folder: Path
    previous: int  # the trial number that ran there last
    intermediate_values: dict[int, float]


def resumable_run(study: optuna.Study, trial: optuna.trial.FrozenTrial, resume_file: str,
                  results_file: str) -> ResumableRun | None:
    """The run a re-queued ``trial`` continues, or None (not a re-run, or nothing left to continue).

    Its latest predecessor must have recorded its folder (``RUN_DIR_ATTR``), which must still hold
    ``resume_file`` (the last checkpoint) and no ``results_file`` (a finished run is not continued: its
    trial failed after it, so the point starts over), and must not have been refused by the app already
    (``RESUME_REFUSED_ATTR``). A study restored on another machine has the folders of none: it starts over.
    """
    history = trial.system_attrs.get("retry_history") or []
    if not history:
        return None
    previous = study.get_trials(deepcopy=False)[int(history[-1])]
    folder = previous.user_attrs.get(RUN_DIR_ATTR)
    if previous.user_attrs.get(RESUME_REFUSED_ATTR) or not continuable(folder, resume_file, results_file):
        return None
    return ResumableRun(Path(str(folder)), previous.number, dict(previous.intermediate_values))


def continuable(folder: str | Path | None, resume_file: str, results_file: str) -> bool:
    """Whether a stopped run's folder can go on: it holds ``resume_file`` and no ``results_file`` (finished)."""
    if not folder:
        return False
    path = Path(str(folder))
    return (path / resume_file).is_file() and not (path / results_file).exists()


def heartbeat_enabled(storage: Any) -> bool:
    """Whether stale RUNNING trials will ever be detected (so it is worth waiting for them)."""
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def trial_ids(storage: Any, study: optuna.Study, trials: list[Any]) -> list[int]:
    """The storage ids of trials (what a job needs to report to its trial), through the storage's public API."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]


@dataclass(frozen=True)
class TrialCounts:
    """Trial states of a study, with stale (retried) failures separated from real failures."""

    complete: int
    pruned: int
    failed: int
    stale: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        """Trials that count toward n_trials."""
        return self.complete + self.pruned + self.failed


def stale_trial_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials that went stale and were re-queued (their slot is re-run, so they don't count)."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get("retry_history", []))
    return numbers


def count_trials(study: optuna.Study) -> TrialCounts:
    """Count trial states the way ``n_trials`` and ``max_failure_rate`` are defined."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    states = [t.state for t in trials]
    n_stale = sum(1 for t in trials if t.state == TrialState.FAIL and t.number in stale)
    return TrialCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL) - n_stale,
        stale=n_stale,
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


class Heartbeat:
    """Records heartbeats of the trials of the running batch from a daemon thread of the sweeper.

    Optuna only beats inside ``study.optimize``; with ask/tell the sweeper must do it, so that trials of
    a killed sweeper become stale while trials of a live one (however long) never do.
    """

    def __init__(self, storage: Any, ids: list[int]) -> None:
        self._storage = storage
        self._trial_ids = list(ids)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = storage.get_heartbeat_interval() if heartbeat_enabled(storage) else None

    def __enter__(self) -> Heartbeat:
        if self._interval is not None and self._trial_ids:
            self._beat()
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - a transient DB error must not kill the sweep
                log.warning("Could not record heartbeat of trial id %s: %s", trial_id, exc)

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            self._beat()


def pruner_spec(pruner_cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate a pruner config (``_target_`` + kwargs) that jobs will rebuild from the study."""
    target = str(pruner_cfg.get("_target_", ""))
    if not target.startswith(_PRUNER_MODULE):
        raise ConfigError(
            f"hydra.sweeper.pruner._target_ must be a class in {_PRUNER_MODULE}*, got '{target}'. "
            f"Pick one with hydra/sweeper/pruner=median|hyperband|nop."
        )
    return dict(pruner_cfg)


def build_pruner(spec: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """Instantiate a pruner spec (only classes of ``optuna.pruners``; a missing spec never prunes)."""
    import optuna
    from hydra.utils import instantiate

    if not spec:
        return optuna.pruners.NopPruner()
    spec = pruner_spec(spec)
    try:
        return instantiate(spec)
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.pruner: cannot build {spec}: {exc}") from exc
