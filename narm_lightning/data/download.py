"""Finding a dataset on disk, or fetching ml-100k: temp file, checksum, atomic move.

ml-100k comes from GroupLens (``u.data`` converted to RecBole's atomic file) or, when GroupLens is out of
reach, from the copy inside the ``recbole`` 1.2.1 wheel (``pip download --no-deps``, never installed).
Both give the same bytes, checked against one SHA-256 before the file is moved into place.
"""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from narm_lightning.errors import DataError
from narm_lightning.io import write_bytes_atomic

log = logging.getLogger(__name__)

ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
ML100K_SIZE = 1_979_230  # bytes of ml-100k.inter; checked before the (slower) hash
ML100K_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def _from_grouplens(timeout: float) -> bytes:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    return ML100K_HEADER.encode() + archive.read("ml-100k/u.data")


def _from_recbole_wheel(timeout: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               RECBOLE_WHEEL]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(RECBOLE_MEMBER)


def fetch_ml100k(root: str | Path, timeout: float = 120.0) -> Path:
    """Put ``<root>/ml-100k/ml-100k.inter`` in place and return its path; say which source was used."""
    target = Path(root).expanduser() / "ml-100k" / "ml-100k.inter"
    errors = []
    for label, fetch in (("GroupLens", _from_grouplens), ("the recbole 1.2.1 wheel on PyPI", _from_recbole_wheel)):
        try:
            payload = fetch(timeout)
        except Exception as exc:  # noqa: BLE001 - any network/tool failure means: try the next source
            errors.append(f"{label}: {type(exc).__name__}: {str(exc).strip()[:200]}")
            continue
        if len(payload) != ML100K_SIZE:
            errors.append(f"{label}: {len(payload)} bytes; expected {ML100K_SIZE}")
            continue
        digest = hashlib.sha256(payload).hexdigest()
        if digest != ML100K_SHA256:
            errors.append(f"{label}: checksum {digest[:12]}… does not match the expected {ML100K_SHA256[:12]}…")
            continue
        try:
            write_bytes_atomic(target, payload)  # temp file beside the target, fsync, rename
        except OSError as exc:
            raise DataError(f"data.root={root!s}: cannot write {target} ({exc.strerror or exc}); "
                            "expected a writable folder.") from None
        log.info("Fetched ml-100k from %s into %s", label, target)  # the console and the run's log: once
        return target
    raise DataError(
        f"ml-100k is not under data.root={root!s} (nor data.extra_roots) and could not be fetched: "
        + "; ".join(errors)
        + f". Put RecBole's ml-100k.inter at {target} or point data.root at a folder holding ml-100k/."
    )
