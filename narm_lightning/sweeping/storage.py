"""Where a study lives: the storage URL (SQLite by default, PostgreSQL for workers on several machines), opened with
heartbeats and clear errors, and the lock that makes creating, counting and asking atomic across workers.

* ``storage: null`` -> ``sqlite:///<original cwd>/optuna/<study_name>.db``: stable across invocations, so running
  the same command again continues the study.
* SQLite (one machine) is locked by a file lock (``<db>.lock``); PostgreSQL (several machines) by a
  transaction-level advisory lock in the database itself, released by the server if the worker dies. Other server
  databases have no lock: workers may overshoot by at most their in-flight trials (a warning says so).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from narm_lightning.errors import ConfigError, first_line

log = logging.getLogger("narm_lightning.sweeping.study")


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


def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None,
                 stale_trial_callback: Any = None) -> Any:
    """An RDBStorage with heartbeats (so stale trials are detected), ``stale_trial_callback`` called on each stale
    trial (the study's retry: ``study.retry_callback``)."""
    import optuna

    url = with_postgres_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # concurrent workers wait instead of erroring
    elif storage_backend(url) == "postgresql":
        engine_kwargs = {"connect_args": pg_connect_args(url), "pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:  # > 0: sweeping/config.py declares it so
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": stale_trial_callback,
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


# A server that accepts a connection but never answers must not hang a sweep: libpq gives up connecting after
# connect_timeout seconds, and the server ends any statement after statement_timeout (ms): Optuna's and the
# lock's statements take milliseconds, the lock waits only while another worker asks or tells.
PG_CONNECT_ARGS = {"connect_timeout": 20, "options": "-c statement_timeout=300000",
                   "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def pg_connect_args(url: str) -> dict[str, Any]:
    """``PG_CONNECT_ARGS`` less what the URL sets itself (``?connect_timeout=5``): SQLAlchemy lets ``connect_args``
    override the URL's query, which would silently replace the user's own libpq settings with these defaults."""
    from sqlalchemy.engine import make_url

    given = {key.lower() for key in make_url(url).query}
    return {key: value for key, value in PG_CONNECT_ARGS.items() if key not in given}


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
    return sqlalchemy.create_engine(with_postgres_driver(url), poolclass=NullPool, connect_args=pg_connect_args(url))


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
