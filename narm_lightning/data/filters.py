"""RecBole 1.2.1's interaction filters, in its order (``Dataset._data_filtering``): duplicates, field values,
then the k-core loop on interaction counts. Plain numpy on the atomic file's columns.

``rm_dup_inter`` (``first``/``last``) sorts by time and keeps one row per (user, item); ``val_interval`` keeps
rows whose float field lies in RecBole's interval string (``"[3,inf)"``, several joined by ``;``) or whose
token field is one of a list; ``user_inter_num_interval`` / ``item_inter_num_interval`` drop users and items
whose interaction count is outside theirs, again and again until none is (k-core). RecBole's
``filter_inter_by_user_or_item`` needs ``.user``/``.item`` feature files, which NARM does not read: without
them it removes nothing, here as there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from narm_lightning.config.intervals import Interval, parse_intervals

__all__ = ["Interval", "filter_rows", "parse_intervals", "within"]

def within(values: np.ndarray, intervals: Sequence[Interval]) -> np.ndarray:
    """Mask of ``values`` inside any of ``intervals`` (RecBole's ``_within_intervals``)."""
    inside = np.zeros(len(values), dtype=bool)
    for left, low, high, right in intervals:
        above = values >= low if left == "[" else values > low
        below = values <= high if right == "]" else values < high
        inside |= above & below
    return inside


def filter_rows(
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    values: Mapping[str, np.ndarray],
    rm_dup_inter: str | None = None,
    val_interval: Mapping[str, Any] | None = None,
    user_inter_num_interval: str | None = None,
    item_inter_num_interval: str | None = None,
) -> np.ndarray:
    """Indices of the rows kept, in the order RecBole keeps them (time order once duplicates were removed,
    since ``rm_dup_inter`` sorts by time first: the ids are then numbered in that order, as RecBole's are).

    ``values`` holds the columns ``val_interval`` names. Same-time rows keep their file order here, where
    RecBole's time sort is unstable.
    """
    rows = np.arange(len(user))
    user_code = np.unique(user, return_inverse=True)[1].astype(np.int64)  # tokens -> ints for fast counting
    item_code = np.unique(item, return_inverse=True)[1].astype(np.int64)
    if rm_dup_inter is not None:
        rows = rows[np.argsort(time, kind="stable")]  # RecBole sorts by time before dropping duplicates
        seq = rows if rm_dup_inter == "first" else rows[::-1]
        pair = user_code[seq] * (int(item_code.max(initial=0)) + 1) + item_code[seq]
        keep = np.zeros(len(user), dtype=bool)
        keep[seq[np.unique(pair, return_index=True)[1]]] = True  # each pair's first row in `seq` order
        rows = rows[keep[rows]]  # the kept rows, in time order
    for field, rule in (val_interval or {}).items():
        column = values[field][rows]
        mask = within(column, parse_intervals(rule)) if isinstance(rule, str) else np.isin(column, list(rule))
        rows = rows[mask]
    user_rule = parse_intervals(user_inter_num_interval) if user_inter_num_interval is not None else None
    item_rule = parse_intervals(item_inter_num_interval) if item_inter_num_interval is not None else None
    while user_rule or item_rule:  # k-core: dropping rows lowers other counts, so loop until nothing is banned
        banned = np.zeros(len(rows), dtype=bool)
        for ids, rule in ((user_code[rows], user_rule), (item_code[rows], item_rule)):
            if rule:
                _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
                banned |= ~within(counts.astype(np.float64), rule)[inverse]
        if not banned.any():
            break
        rows = rows[~banned]
    return rows
