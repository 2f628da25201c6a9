"""RecBole's sequential protocol: id remapping, (user, time) order, sliding-window augmentation, splits.

Everything is vectorised with numpy and ends as tensors built once, so the DataModule never does
per-sample Python work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from narm_lightning.config.data_schema import TIME_ORDERS
from narm_lightning.errors import DataError


@dataclass(frozen=True)
class Examples:
    """Next-item examples: left-aligned, zero-padded histories ``[N, L]``, their lengths and targets."""

    item_seq: torch.Tensor
    item_seq_len: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.target.numel())

    def take(self, index: torch.Tensor) -> Examples:
        return Examples(self.item_seq[index], self.item_seq_len[index], self.target[index])

    def histories(self, index: torch.Tensor) -> torch.Tensor:
        """The rows' histories ``[len(index), W]``, W their longest (so trimming changes no score)."""
        width = max(int(self.item_seq_len[index].max()), 1) if index.numel() else 1
        return self.item_seq[index, :width]

    def parts(self) -> tuple[torch.Tensor, ...]:
        """The tensors that determine the examples (what the data fingerprint hashes)."""
        return self.item_seq, self.item_seq_len, self.target


@dataclass(frozen=True)
class RaggedExamples:
    """Examples whose histories are windows of one flat id tensor: row k's history is
    ``flat[start[k] : start[k] + item_seq_len[k]]``, gathered and padded per batch (``histories``).

    Why: session logs give one example per click (24 M on YOOCHOOSE), and a padded ``[N, 50]`` int64 matrix
    of them is 9 GB, where the windows cost 24 bytes a row over the sessions' own ids. ``item_seq`` builds the
    padded matrix all the same, for small data and tests.
    """

    flat: torch.Tensor
    start: torch.Tensor
    item_seq_len: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.target.numel())

    def take(self, index: torch.Tensor) -> RaggedExamples:
        return RaggedExamples(self.flat, self.start[index], self.item_seq_len[index], self.target[index])

    def histories(self, index: torch.Tensor) -> torch.Tensor:
        length = self.item_seq_len[index]
        width = max(int(length.max()), 1) if index.numel() else 1
        cols = torch.arange(width)
        inside = cols.unsqueeze(0) < length.unsqueeze(1)
        position = torch.where(inside, self.start[index].unsqueeze(1) + cols, 0)
        return torch.where(inside, self.flat[position], 0) if len(self.flat) else torch.zeros_like(position)

    @property
    def item_seq(self) -> torch.Tensor:
        return self.histories(torch.arange(len(self)))

    def parts(self) -> tuple[torch.Tensor, ...]:
        return self.flat, self.start, self.item_seq_len, self.target


@dataclass(frozen=True)
class SequentialData:
    """The three splits plus what the model and the serving code need to know about the items."""

    train: Examples | RaggedExamples
    valid: Examples | RaggedExamples
    test: Examples | RaggedExamples
    n_items: int  # counts the padding id 0, like RecBole's item_num
    item_tokens: np.ndarray  # original token of each internal id; index 0 is "[PAD]"
    stats: dict[str, int | float] = field(default_factory=dict)
    source: str = ""  # the file(s) it was read from, for messages
    files: tuple[str, ...] = ()  # the data files themselves (their SHA-256 goes into the protocol card)

    def fingerprint(self) -> str:
        """SHA-256 of exactly what a model sees: item ids and every split's histories and targets.

        Any change to the data file (new items, rows reordered or edited) or to a protocol setting shows
        here, so a resumed run can refuse data it was not trained on.
        """
        digest = hashlib.sha256("\x1f".join(map(str, self.item_tokens)).encode())
        for part in (self.train, self.valid, self.test):
            for tensor in part.parts():
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()


def remap_tokens(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1..n in order of first appearance (RecBole's ``pd.factorize``), id 0 reserved for padding."""
    uniques, first, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique tokens by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    vocab = np.concatenate([np.asarray(["[PAD]"], dtype=object), uniques[order].astype(object)])
    return rank[inverse].astype(np.int64), vocab


def sliding_window_examples(
    user: np.ndarray, item: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each interaction after a user's first is a target; its history is the previous <= max_len items.

    Input arrays are sorted by (user, time). Returns (user, item_seq [N, W], length, target), W = the longest
    history (at most max_len).
    """
    n = len(user)
    starts_user = np.ones(n, dtype=bool)
    starts_user[1:] = user[1:] != user[:-1]
    user_start = np.maximum.accumulate(np.where(starts_user, np.arange(n), 0))
    pos = np.flatnonzero(~starts_user)
    hist_start = np.maximum(user_start[pos], pos - max_len)
    length = pos - hist_start
    # columns up to the longest history, not max_len: padding past it changes no result (the GRU is read at
    # each row's length, attention masks padding), and a max_len far beyond the data would need memory for nothing
    cols = np.arange(max(int(length.max()), 1) if len(length) else 1)
    idx = hist_start[:, None] + cols[None, :]
    valid = cols[None, :] < length[:, None]
    seq = np.where(valid, item[np.minimum(idx, n - 1)], 0)
    return user[pos], seq.astype(np.int64), length.astype(np.int64), item[pos].astype(np.int64)


def leave_one_out(user: np.ndarray, n_holdout: int = 2) -> np.ndarray:
    """Split label per example (0 train, 1 valid, 2 test), RecBole's ``leave_one_out``: ``n_holdout=2`` is
    ``valid_and_test``, ``n_holdout=1`` is ``test_only`` (no valid split).

    Within each user's examples (contiguous, time-ordered) the last goes to test and the one before to
    valid; a user with k <= n_holdout examples keeps k-1 for holdout, filled from the test end.
    """
    n = len(user)
    split = np.zeros(n, dtype=np.int64)
    if n == 0:
        return split
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = user[:-1] != user[1:]
    group_end = np.flatnonzero(is_last)
    group_start = np.concatenate([[0], group_end[:-1] + 1])
    sizes = group_end - group_start + 1
    from_end = np.repeat(group_end, sizes) - np.arange(n)  # 0 for the user's last example
    holdout = np.minimum(n_holdout, np.repeat(sizes, sizes) - 1)
    in_holdout = from_end < holdout
    # the k held-out examples take the last k labels of (1 valid, 2 test): test is always filled first
    split[in_holdout] = (2 - from_end[in_holdout]).astype(np.int64)
    return split


def split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """RecBole 1.2.1's ``Dataset._calcu_split_ids`` as part sizes: every part but the first rounded down, the
    first takes the rest; then a part whose exact share is in (0, 1) gets one from the first while it has
    more than one. ``ratios`` are normalised first, in the same float arithmetic as RecBole's."""
    norm = [r / sum(ratios) for r in ratios]
    counts = [int(r * total) for r in norm]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(norm)):
        if counts[0] <= 1:
            break
        if 0 < norm[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def ratio_split(user: np.ndarray, time: np.ndarray, ratios: Sequence[float], by_user: bool) -> np.ndarray:
    """Split label per example under RecBole's ``RS`` (examples in (user, time) order).

    ``by_user``: each user's examples, in time order, split by ``split_counts``. Else all examples in time
    order (RecBole's ``order: TO`` sort of the whole dataset, stable as RecBole's: same-time examples keep their
    (user, time) order) split once.
    """
    labels = np.zeros(len(user), dtype=np.int64)
    if by_user:
        starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(user)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            counts = split_counts(end - start, ratios)
            labels[start:end] = np.repeat(np.arange(len(counts)), counts)
        return labels
    order = np.argsort(time, kind="stable")
    labels[order] = np.repeat(np.arange(len(ratios)), split_counts(len(user), ratios))
    return labels


def to_examples(seq: np.ndarray, length: np.ndarray, target: np.ndarray) -> Examples:
    return Examples(torch.from_numpy(seq).long(), torch.from_numpy(length).long(), torch.from_numpy(target).long())


def time_keys(timestamps: np.ndarray, time_order: str, normalize: bool) -> np.ndarray:
    """The values interactions are ordered by (stably, after the user): RecBole's, or the times themselves.

    ``"recbole"``: the time field as RecBole 1.2.1 holds it when it sorts, so that same-time ties fall as in
    RecBole: min-max scaled in float64 when ``normalize`` (RecBole's ``normalize_all``, on in its ml-100k
    config; all ones when every time is equal), then a float32 tensor (its ``Interaction`` holds float fields
    as ``torch.FloatTensor``). float32 keeps 24 bits: scaled ml-100k times tie within about 0.6 s, raw Unix
    seconds within 64-128 s, and tied interactions keep their file order. ``"exact"``: the float64 times read,
    tied only when equal: the order the data means, RecBole's rows otherwise.
    """
    if time_order not in TIME_ORDERS:
        raise ValueError(f"time_order {time_order!r}; expected one of {', '.join(TIME_ORDERS)}")
    times = np.asarray(timestamps, dtype=np.float64)
    if time_order == "exact":
        return times
    if normalize and len(times):
        low, high = float(times.min()), float(times.max())
        times = (times - low) / (high - low) if high != low else np.ones_like(times)
    return times.astype(np.float32)


@dataclass(frozen=True)
class Split:
    """RecBole's ``eval_args.split`` and ``group_by``: ``("LS", "valid_and_test")``, ``("LS", "test_only")``
    or ``("RS", (0.8, 0.1, 0.1))`` with ``by_user``."""

    mode: str = "LS"
    args: Any = "valid_and_test"
    by_user: bool = True

    @classmethod
    def from_eval_args(cls, args: Mapping[str, Any]) -> Split:
        """From a filled, checked ``eval_args`` mapping (``schema.eval_args_problems``)."""
        ((mode, value),) = dict(args["split"]).items()
        value = value if mode == "LS" else tuple(float(r) for r in value)
        return cls(mode, value, by_user=args.get("group_by") == "user")

    def labels(self, user: np.ndarray, time: np.ndarray) -> np.ndarray:
        if self.mode == "LS":
            return leave_one_out(user, 2 if self.args == "valid_and_test" else 1)
        return ratio_split(user, time, list(self.args), self.by_user)

    def describe(self) -> str:
        return f"{{LS: {self.args}}}" if self.mode == "LS" else (
            f"{{RS: {list(self.args)}}}, group_by {'user' if self.by_user else 'none'}")


def build_sequential(
    user_tokens: np.ndarray, item_tokens: np.ndarray, timestamps: np.ndarray, max_len: int, source: str = "",
    split: Split = Split(),  # noqa: B008 - frozen: a shared default is safe
    time_order: str = "recbole", normalize_time: bool = False,
) -> SequentialData:
    """The whole protocol on one interaction table; ``source`` names the file for error messages.

    As RecBole 1.2.1 for sequential models, the examples are made first (each interaction after a user's
    first is a target) and then split, so every split's histories reach back into the earlier ones.
    ``time_order`` and ``normalize_time``: see :func:`time_keys`.
    """
    timestamps = time_keys(timestamps, time_order, normalize_time)
    user, _ = remap_tokens(user_tokens)
    item, item_vocab = remap_tokens(item_tokens)
    order = np.lexsort((timestamps, user))  # stable: by user, then time, then file order
    ex_user, seq, length, target = sliding_window_examples(user[order], item[order], max_len)
    if len(target) == 0:
        raise DataError(f"{source}: no user has two interactions, so there is no next item to predict.")
    sorted_user, sorted_time = user[order], np.asarray(timestamps)[order]
    ex_time = sorted_time[np.r_[False, sorted_user[1:] == sorted_user[:-1]]]
    labels = split.labels(ex_user, ex_time)
    parts = [np.flatnonzero(labels == s) for s in range(3)]
    needed = [0, 2] if split.mode == "LS" and split.args == "test_only" else [0, 1, 2]
    if split.mode == "RS":
        needed = [i for i in range(3) if split.args[i] > 0]
    if any(len(parts[i]) == 0 for i in needed):
        raise DataError(
            f"{source}: eval_args.split {split.describe()} leaves a split empty (train/valid/test examples: "
            f"{'/'.join(str(len(p)) for p in parts)}); expected users with more interactions (leave-one-out "
            "needs one for history, then one each for train and the held-out splits) or other ratios."
        )
    train, valid, test = (to_examples(seq[p], length[p], target[p]) for p in parts)
    stats = {
        "n_users": int(user.max()),
        "n_items": len(item_vocab) - 1,
        "n_interactions": len(item),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        "avg_seq_len": float(length.mean()),
    }
    return SequentialData(train, valid, test, len(item_vocab), item_vocab, stats, source)


def build_session_examples(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    train_targets: np.ndarray,
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    test_targets: np.ndarray,
    n_items: int,
    item_tokens: np.ndarray,
    valid_ratio: float,
    seed: int,
    max_len: int,
    source: str = "",
) -> SequentialData:
    """The NARM paper's session protocol: a seeded random ``valid_ratio`` of the training examples
    validates, the prepared test examples test. ``train`` and ``test`` are ragged prefixes ``(flat, starts,
    lengths)`` (``sessions.Ragged``); each history keeps its last ``max_len`` items.

    ``valid_ratio=0`` trains on every training example and leaves validation empty: the refit a study
    does once validation has chosen the epoch count.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = len(train_targets)
    n_valid = int(round(n * valid_ratio))
    if (valid_ratio > 0 and n_valid < 1) or n_valid >= n:
        raise DataError(f"{source}: data.valid_ratio={valid_ratio} leaves {n_valid} of {n} training examples "
                        "for validation; expected at least one (or valid_ratio 0 for none), and at least one "
                        "left to train on.")
    if len(test_targets) == 0:
        raise DataError(f"{source}: has no test examples.")

    def ragged(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, targets: np.ndarray) -> RaggedExamples:
        kept = np.minimum(lengths, max_len)
        return RaggedExamples(torch.from_numpy(np.asarray(flat, dtype=np.int64)),
                              torch.from_numpy(np.asarray(starts + lengths - kept, dtype=np.int64)),
                              torch.from_numpy(kept.astype(np.int64)), torch.from_numpy(targets.astype(np.int64)))

    everything = ragged(*train, train_targets)
    order = np.random.default_rng(seed).permutation(n)
    valid_idx, train_idx = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    train_part = everything.take(torch.from_numpy(train_idx))
    valid_part = everything.take(torch.from_numpy(valid_idx))
    test_part = ragged(*test, test_targets)
    stats = {
        "n_items": n_items - 1,
        "n_train": len(train_part),
        "n_valid": len(valid_part),
        "n_test": len(test_part),
        "avg_seq_len": float(everything.item_seq_len.double().mean()),
    }
    return SequentialData(train_part, valid_part, test_part, n_items, item_tokens, stats, source)


def build_benchmark(parts: Sequence[tuple[np.ndarray, np.ndarray]], max_len: int,
                    sources: Sequence[str]) -> SequentialData:
    """RecBole's ``benchmark_filename``: three pre-split files (train, valid, test) whose rows are examples
    already, ``(histories, targets)`` each (a history is a tuple of item tokens, oldest first). As RecBole: no
    filter, no window, no split; item ids by first appearance over every target (the files in order), then
    every history token (``alias_of_item_id: [item_id_list]``, which RecBole's session configs set).

    A history longer than ``max_len`` is refused rather than cut: RecBole keeps it whole.
    """
    histories = [h for h, _ in parts]
    targets = np.concatenate([t for _, t in parts])
    flat = np.fromiter((tok for part in histories for seq in part for tok in seq), dtype=object,
                       count=sum(len(seq) for part in histories for seq in part))
    ids, vocab = remap_tokens(np.concatenate([targets.astype(object), flat]))
    target_ids, flat_ids = ids[:len(targets)], ids[len(targets):]
    lengths = np.fromiter((len(seq) for part in histories for seq in part), dtype=np.int64, count=len(targets))
    for (part_hist, _), source in zip(parts, sources, strict=True):
        if len(part_hist) == 0:
            raise DataError(f"{source}: has no rows; expected one example a row (<item>_list history + item).")
        bad = [i for i, seq in enumerate(part_hist) if len(seq) == 0]
        if bad:
            raise DataError(f"{source}, line {bad[0] + 2}: the history is empty; expected at least one item before "
                            "the target (RecBole would read position -1).")
    longest = int(lengths.max())
    if longest > max_len:
        where = next(src for (h, _), src in zip(parts, sources, strict=True) if max(map(len, h)) == longest)
        raise DataError(f"{where}: a history holds {longest} items, more than data.max_item_list_length="
                        f"{max_len}; RecBole keeps benchmark histories whole, so set data.max_item_list_length="
                        f"{longest} (or MAX_ITEM_LIST_LENGTH) to train on the same examples.")
    seq = np.zeros((len(targets), longest), dtype=np.int64)
    rows = np.repeat(np.arange(len(targets)), lengths)
    cols = np.arange(len(flat_ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    seq[rows, cols] = flat_ids
    bounds = np.cumsum([0, *(len(t) for _, t in parts)])
    train, valid, test = (to_examples(seq[a:b], lengths[a:b], target_ids[a:b])
                          for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    stats = {"n_items": len(vocab) - 1, "n_interactions": len(targets), "n_train": len(train),
             "n_valid": len(valid), "n_test": len(test), "avg_seq_len": float(lengths.mean())}
    return SequentialData(train, valid, test, len(vocab), vocab, stats, ", ".join(sources))
