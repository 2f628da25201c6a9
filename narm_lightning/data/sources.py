"""Which reader and protocol a dataset name means; the one place that turns data settings into tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from narm_lightning.data.atomic import read_atomic
from narm_lightning.data.download import fetch_ml100k, find_dataset_file
from narm_lightning.data.protocol import SequentialData, build_sequential
from narm_lightning.errors import DataError

FETCHABLE = {"ml-100k": fetch_ml100k}


def locate_atomic(dataset: str, root: str, extra_roots: Sequence[str], download: bool) -> Path:
    """``<root>/<dataset>/<dataset>.inter``, else the same under each extra root, else fetch (ml-100k)."""
    found = find_dataset_file(dataset, "inter", [root, *extra_roots])
    if found is not None:
        return found
    if download and dataset in FETCHABLE:
        return FETCHABLE[dataset](root)
    looked = ", ".join(str(Path(r) / dataset / f"{dataset}.inter") for r in [root, *extra_roots])
    hint = "" if dataset in FETCHABLE else f" Only {', '.join(FETCHABLE)} can be fetched automatically."
    raise DataError(f"data.dataset={dataset!r}: no atomic file found (looked at {looked}).{hint}")


def load_user_sequences(
    dataset: str,
    root: str,
    extra_roots: Sequence[str],
    user_field: str,
    item_field: str,
    time_field: str,
    max_len: int,
    download: bool = True,
) -> SequentialData:
    """A RecBole atomic ``.inter`` file under RecBole's sequential leave-one-out protocol."""
    path = locate_atomic(dataset, root, extra_roots, download)
    table = read_atomic(path, {user_field: "token", item_field: "token", time_field: "float"})
    return build_sequential(
        table.columns[user_field], table.columns[item_field], table.columns[time_field], max_len, str(path)
    )
