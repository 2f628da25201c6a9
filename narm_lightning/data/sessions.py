"""Session-based splits (NARM / SR-GNN style): the split type, ragged rows, prefix augmentation and padding.

Item ids are internal ids 1..n_items in every array here; 0 is reserved for padding. The readers of prepared
splits (text, pickles) are ``session_files.py``; raw logs go through ``session_split.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Rows of item ids kept in one flat int64 array: row k is ``flat[starts[k] : starts[k] + lengths[k]]``.

    Why not a list of arrays: YOOCHOOSE-size logs give 24 M training prefixes, and a list of 24 M numpy views
    costs gigabytes and minutes; three arrays cost 8 bytes a row. Rows may overlap (the prefixes of a session
    are windows of it), so the prefix augmentation copies nothing.
    """

    flat: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray]) -> Ragged:
        flat, lengths = flatten(rows)
        return cls(flat, chunk_offsets(lengths), lengths)

    @classmethod
    def consecutive(cls, flat: np.ndarray, lengths: np.ndarray) -> Ragged:
        """Rows laid end to end."""
        lengths = np.asarray(lengths, dtype=np.int64)
        return cls(np.asarray(flat, dtype=np.int64), chunk_offsets(lengths), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self) -> list[np.ndarray]:
        """The rows as views (for small data and tests: one Python object a row)."""
        return [self.flat[a: a + b] for a, b in zip(self.starts.tolist(), self.lengths.tolist(), strict=True)]

    def with_flat(self, flat: np.ndarray) -> Ragged:
        """The same rows over other ids (a remapping of ``flat``)."""
        return Ragged(flat, self.starts, self.lengths)


@dataclass(frozen=True)
class SessionSplit:
    """A train/test split of sessions with the NARM/SR-GNN prefix augmentation already applied.

    ``train`` row k followed by ``train_targets[k]`` is one training example (likewise for test).
    ``sessions`` keeps the whole training sessions when the source has them (None for a pickle directory
    without ``all_train_seq.txt``). ``item_ids[i]`` is the original id (a token) of internal item ``i``
    (index 0 unused) when the split was made from raw data, else None.
    """

    train: Ragged
    train_targets: np.ndarray
    test: Ragged
    test_targets: np.ndarray
    n_items: int
    source: str
    sessions: Ragged | None = None
    item_ids: np.ndarray | None = None
    stats: dict | None = None  # what the preprocessing read and dropped, for the console (raw logs only)

    @property
    def n_train(self) -> int:
        """Number of augmented training examples."""
        return len(self.train_targets)

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return len(self.test_targets)

    @property
    def train_prefixes(self) -> list[np.ndarray]:
        return self.train.rows()

    @property
    def test_prefixes(self) -> list[np.ndarray]:
        return self.test.rows()

    @property
    def train_sessions(self) -> list[np.ndarray] | None:
        return None if self.sessions is None else self.sessions.rows()


# ----------------------------------------------------------------------------- ragged helpers


def chunk_offsets(lengths: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive chunks of the given lengths in a flat array."""
    off = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=off[1:])
    return off


def split_flat(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Cut a flat array into consecutive views of the given lengths (no copies)."""
    starts = chunk_offsets(lengths).tolist()
    return [flat[s : s + n] for s, n in zip(starts, lengths.tolist(), strict=True)]


def flatten(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`split_flat`: (concatenated int64 values, int64 lengths)."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    if len(arrays) == 0:
        return np.zeros(0, dtype=np.int64), lengths
    return np.concatenate(arrays).astype(np.int64, copy=False), lengths


def within_group_index(lengths: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """For groups of the given lengths laid end to end: 0, 1, .., n-1 for each group (in ``dtype``)."""
    index = np.arange(int(lengths.sum()), dtype=dtype)
    index -= np.repeat(chunk_offsets(lengths).astype(dtype, copy=False), lengths)
    return index


def augment_flat(
    flat: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised prefix augmentation of sessions given as a flat array + lengths.

    Returns (prefix_starts, prefix_lengths, targets, session_index): example k is
    ``flat[prefix_starts[k] : prefix_starts[k] + prefix_lengths[k]]`` -> ``targets[k]``, made from
    session ``session_index[k]``. Order as in NARM/SR-GNN: sessions in order, longest prefix first.
    Indices are int32 below 2^31 clicks: YOOCHOOSE's 24 M examples then take 0.6 GB of temporaries, not 1.3.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    index = np.int32 if len(flat) < 2**31 else np.int64
    n_examples = np.maximum(lengths - 1, 0)
    session_index = np.repeat(np.arange(len(lengths), dtype=index), n_examples)
    prefix_lengths = np.repeat((lengths - 1).astype(index), n_examples)
    prefix_lengths -= within_group_index(n_examples, index)
    prefix_starts = np.repeat(chunk_offsets(lengths).astype(index), n_examples)
    targets = flat[prefix_starts + prefix_lengths].astype(np.int64, copy=False)
    return prefix_starts, prefix_lengths, targets, session_index


def augment_sessions(sessions: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """NARM/SR-GNN augmentation: session s of length n gives (s[:-i], s[-i]) for i = 1..n-1.

    Longest prefix first, sessions in the given order; sessions of length < 2 give nothing. The
    prefixes are views into one concatenated array (no per-example copies).
    """
    prefixes, targets = augment_ragged(Ragged.from_rows(sessions))
    return prefixes.rows(), targets


def augment_ragged(sessions: Ragged) -> tuple[Ragged, np.ndarray]:
    """:func:`augment_sessions` on sessions laid end to end: the prefixes are windows of the same flat array."""
    starts, plens, targets, _ = augment_flat(sessions.flat, sessions.lengths)
    return Ragged(sessions.flat, starts, plens), targets
