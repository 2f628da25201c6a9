"""Property-based: every reader, fed random and mutated files, returns a correct dataset or a DataError.

Never another exception, never a hang (each example runs under a generous alarm that only a hang trips).

To fuzz another reader (e.g. the session readers), add one ``Reader`` to ``READERS``: a strategy for valid
files (bytes), a function that loads a file at a given path, and a check of what it returned. Examples are
derandomized (the same on every run); ``NARM_FUZZ_EXAMPLES=2000`` runs a deeper search.
"""

from __future__ import annotations

import io
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from narm_lightning.data.atomic import AtomicTable, read_atomic
from narm_lightning.data.protocol import SequentialData
from narm_lightning.data.session_files import read_pickle_split, read_text_split
from narm_lightning.data.sources import load_user_sequences
from narm_lightning.errors import DataError
from narm_lightning.recbole.checkpoint import load_recbole_state_dict

EXAMPLES = int(os.environ.get("NARM_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_GUARD_S = 60
FIELDS = {"user_id": "token", "item_id": "token", "timestamp": "float"}


@contextmanager
def no_hang(seconds: int = HANG_GUARD_S) -> Iterator[None]:
    """Fail (instead of blocking the suite) when one example runs absurdly long."""
    def alarm(signum: int, frame: Any) -> None:
        raise AssertionError(f"reader did not return within {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- valid files ------------------------------------------------------------------------------------------

TOKEN = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\t\n\r\x00"),
                min_size=1, max_size=6).filter(lambda t: t.strip() != "")
TIME = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(-1e12, 1e12, allow_nan=False).map(repr))


@st.composite
def atomic_files(draw: st.DrawFn) -> tuple[bytes, dict[str, list[str]]]:
    """A valid ``.inter`` file (fields in any order, an extra column maybe) and the columns it holds."""
    n_users = draw(st.integers(1, 6))
    users = draw(st.lists(TOKEN, min_size=n_users, max_size=n_users, unique=True))
    items = draw(st.lists(TOKEN, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(1, 40))
    cols = {
        "user_id": [draw(st.sampled_from(users)) for _ in range(n)],
        "item_id": [draw(st.sampled_from(items)) for _ in range(n)],
        "timestamp": [draw(TIME) for _ in range(n)],
    }
    if draw(st.booleans()):
        cols["rating"] = [draw(st.integers(1, 5).map(str)) for _ in range(n)]
    names = draw(st.permutations(list(cols)))
    kinds = {**FIELDS, "rating": "float"}
    header = "\t".join(f"{k}:{kinds[k]}" for k in names)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join("\t".join(cols[k][i] for k in names) for i in range(n))
    return (header + newline + body + draw(st.sampled_from(["", newline]))).encode(), cols


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid file damaged the ways files get damaged: cut, spliced, re-encoded, bytes flipped."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "delete", "insert", "flip", "dup_line", "tab", "latin1", "nul"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 20))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([b"\t", b"\n", b"x", b"nan", b"inf", b"1e999", b" ", b"\r", b"#",
                                                b"\xff", b"\xc3", "é".encode(), "١".encode(), b"1_0", b"\t\t", b":"]))
        elif op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "dup_line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            data = bytearray(b"\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]))
        elif op == "tab":
            data = bytearray(bytes(data).replace(b"\t", b" ", 1))
        elif op == "latin1":
            data = bytearray(bytes(data).decode("utf-8", "replace").encode("latin-1", "replace"))
        elif op == "nul":
            data[at:at] = b"\x00"
    return bytes(data)


def any_file(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(valid, mutated(valid), st.binary(max_size=200))


# --- what a correct result looks like ---------------------------------------------------------------------

def check_table(table: AtomicTable) -> None:
    assert set(table.columns) == set(FIELDS)
    n = len(table)
    assert n > 0 and all(len(c) == n for c in table.columns.values())
    assert all(isinstance(t, str) and t for t in table.columns["user_id"].tolist() + table.columns["item_id"].tolist())
    assert table.columns["timestamp"].dtype == np.float64 and np.isfinite(table.columns["timestamp"]).all()


def check_sequential(data: SequentialData) -> None:
    assert data.n_items == len(data.item_tokens) >= 2
    for split in (data.train, data.valid, data.test):
        assert len(split) > 0
        seq, length, target = split.item_seq, split.item_seq_len, split.target
        assert ((target >= 1) & (target < data.n_items)).all()
        assert ((length >= 1) & (length <= seq.shape[1])).all()
        assert ((seq >= 0) & (seq < data.n_items)).all()
        positions = np.arange(seq.shape[1])[None, :]
        real = positions < length.numpy()[:, None]
        assert (seq.numpy()[real] > 0).all() and (seq.numpy()[~real] == 0).all()
    assert len(data.test) == data.stats["n_test"] <= data.stats["n_users"]


@st.composite
def recbole_checkpoints(draw: st.DrawFn) -> bytes:
    """A small RecBole-like ``.pth``: a state_dict of tensors beside plain objects."""
    shapes = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3))
    state = {f"w{i}": torch.full(shape, float(i)) for i, shape in enumerate(shapes)}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "epoch": draw(st.integers(0, 9)), "config": {"model": "NARM"}}, buffer)
    return buffer.getvalue()


def check_state_dict(state: dict) -> None:
    assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


@st.composite
def session_files(draw: st.DrawFn) -> bytes:
    """A valid ``train_sessions.txt``: sessions of item ids >= 1, space-separated, one a line."""
    sessions = draw(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=6), min_size=1, max_size=8))
    return "".join(" ".join(map(str, s)) + "\n" for s in sessions).encode()


@st.composite
def pickled_examples(draw: st.DrawFn) -> bytes:
    """A valid SR-GNN ``train.txt``: a pickle of (list of prefix lists, list of labels)."""
    import pickle

    prefixes = draw(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=5), min_size=1, max_size=8))
    labels = draw(st.lists(st.integers(1, 40), min_size=len(prefixes), max_size=len(prefixes)))
    return pickle.dumps((prefixes, labels), protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))


def _with_test_file(path: Path, name: str, content: bytes) -> Path:
    (path.parent / name).write_bytes(content)
    return path.parent


def check_session_split(split: Any) -> None:
    from narm_lightning.data.sessions import SessionSplit

    assert isinstance(split, SessionSplit)
    assert len(split.train_prefixes) == len(split.train_targets) and split.n_test == 1
    assert all(len(p) >= 1 for p in split.train_prefixes)
    assert int(split.train_targets.min(initial=1)) >= 1 and split.n_items >= int(split.train_targets.max(initial=1))


@dataclass(frozen=True)
class Reader:
    """One reader under fuzz: valid files, how to load one, and what a correct result satisfies."""

    name: str
    valid: st.SearchStrategy[bytes]
    filename: str  # relative path the file is written to inside a fresh folder
    load: Callable[[Path, Path], Any]  # (folder, file path) -> result; raises DataError on bad input
    check: Callable[[Any], None]


READERS = [
    Reader("atomic", atomic_files().map(lambda f: f[0]), "x.inter",
           lambda root, path: read_atomic(path, FIELDS), check_table),
    Reader("atomic+protocol", atomic_files().map(lambda f: f[0]), "fz/fz.inter",
           lambda root, path: load_user_sequences("fz", str(root), [], "user_id", "item_id", "timestamp", 5,
                                                  download=False),
           check_sequential),
    Reader("session text", session_files(), "s/train_sessions.txt",
           lambda root, path: read_text_split(_with_test_file(path, "test.tsv", b"1 2\t3\n")), check_session_split),
    Reader("session pickle", pickled_examples(), "p/train.txt",
           lambda root, path: read_pickle_split(_with_test_file(path, "test.txt", __import__("pickle").dumps(
               ([[1, 2]], [3])))), check_session_split),
    Reader("recbole .pth", recbole_checkpoints(), "m.pth", lambda root, path: load_recbole_state_dict(path),
           check_state_dict),
]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_random_and_mutated_files_give_a_dataset_or_a_data_error(reader: Reader) -> None:
    @FUZZ
    @given(data=any_file(reader.valid))
    def run(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / reader.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            try:
                with no_hang():
                    result = reader.load(Path(tmp), path)
            except DataError as exc:
                assert str(path) in str(exc), f"the message names the file: {exc}"
                return
            reader.check(result)

    run()


@FUZZ
@given(file=atomic_files())
def test_valid_atomic_files_read_back_exactly(file: tuple[bytes, dict[str, list[str]]]) -> None:
    data, cols = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.inter"
        path.write_bytes(data)
        table = read_atomic(path, FIELDS)
    assert table.columns["user_id"].tolist() == cols["user_id"]
    assert table.columns["item_id"].tolist() == cols["item_id"]
    assert table.columns["timestamp"].tolist() == [float(t) for t in cols["timestamp"]]
