"""A throwaway PostgreSQL server for the distributed-sweep tests (loopback only, trust auth, deleted after).

``make postgres`` installs Debian's ``postgresql`` package where ``initdb`` is missing; Debian keeps the
server binaries in ``/usr/lib/postgresql/<version>/bin``, off PATH, so both places are searched.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_URL = "NARM_TEST_POSTGRES_URL"  # use this server instead of starting one (e.g. a CI service container)
DATABASE = "narm_test"


class PostgresUnavailable(Exception):
    """Binaries, driver or a user to run the server as are missing: the caller skips with this reason."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (PATH first, then Debian's, newest version)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(debian)]
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; run `make postgres`")


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: prefix commands with ``runuser -u postgres --`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server") from exc
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` is missing (needed to start the server)")
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}\n{tail}")


def _create_database(port: int) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


@contextmanager
def postgres_url() -> Iterator[str]:
    """Yield a SQLAlchemy URL of an empty database: ``$NARM_TEST_POSTGRES_URL`` or a fresh local server.

    The local server lives in a temp dir (data, unix socket, log), listens on 127.0.0.1 only on a free
    port, and is stopped and deleted on exit whatever happens.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable("the psycopg2 driver is missing: pip install -e '.[postgres]'") from exc
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    bin_dir = find_bin_dir()
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="narm-pg-"))  # not under pytest's tmp: it is private to root
    data, log = root / "data", root / "server.log"
    port = _free_port()
    started = False
    try:
        if prefix:
            shutil.chown(root, user="postgres", group=None)
        _run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync"], "initdb")  # fmt: skip
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"  # throwaway: speed over safety
            )
        started = True
        _run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"],
             "pg_ctl start", log)  # fmt: skip
        _create_database(port)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
