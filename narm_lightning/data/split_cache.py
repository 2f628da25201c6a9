"""Prepared session splits cached on disk, keyed by the SHA-256 of the log and the settings: one ``.npz`` of the
ragged arrays (no pickle) and a ``.json`` for people, each written atomically."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from narm_lightning.data.sessions import Ragged, SessionSplit
from narm_lightning.io import atomic_open, sha256_file, write_text_atomic

CACHE_FORMAT_VERSION = 2  # 2: ragged prefixes (flat, starts, lengths)


def cached_split(name: str, path: Path, settings: dict, build: Callable[[], SessionSplit],
                 cache_dir: Path | str) -> SessionSplit:
    """``build()``, or what it returned before for the same file content (SHA-256) and ``settings``, read from
    ``<cache_dir>/<name>-<key>.npz``; written atomically, and a cache that cannot be written only warns."""
    key_source = json.dumps({"v": CACHE_FORMAT_VERSION, "dataset": name, "sha256": sha256_file(path), **settings},
                            sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    cache_file = Path(cache_dir).expanduser() / f"{name}-{key}.npz"
    if cache_file.is_file():
        try:
            return _load_cache(cache_file)
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
            pass  # unreadable cache entry (an object array is refused unread: no pickle): rebuild and overwrite it
    split = build()
    try:
        _save_cache(cache_file, split, key_source)
    except OSError as exc:  # a read-only or full cache dir must not lose the work just done
        warnings.warn(f"could not write the session cache {cache_file}: {exc}", stacklevel=2)
    return split


def _save_cache(cache_file: Path, split: SessionSplit, key_source: str) -> None:
    """Write the split as one .npz (+ a small json for people), each atomically (temp file, fsync, rename)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "n_items": split.n_items,
        "source": split.source,
        "key": json.loads(key_source),
        "n_train": split.n_train,
        "n_test": split.n_test,
        "has_sessions": split.sessions is not None,
        "stats": split.stats,
    }
    arrays: dict[str, np.ndarray] = {"train_targets": split.train_targets, "test_targets": split.test_targets,
                                     "meta": np.array(json.dumps(meta))}
    for name, ragged in (("train", split.train), ("test", split.test), ("session", split.sessions)):
        if ragged is not None:
            arrays.update({f"{name}_flat": ragged.flat, f"{name}_starts": ragged.starts,
                           f"{name}_lens": ragged.lengths})
    if split.item_ids is not None:  # text ids as a fixed-width unicode array: no pickle
        ids = split.item_ids
        arrays["item_ids"] = ids if ids.dtype.kind in "iu" else np.asarray(ids, dtype=np.str_)
    with atomic_open(cache_file, "wb") as handle:
        np.savez(handle, **arrays)
    write_text_atomic(cache_file.with_suffix(".json"), json.dumps(meta, indent=1))


def _load_cache(cache_file: Path) -> SessionSplit:
    """Read a split written by :func:`_save_cache` (no pickles: allow_pickle=False)."""
    with np.load(cache_file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))

    def ragged(name: str) -> Ragged:
        return Ragged(arrays[f"{name}_flat"], arrays[f"{name}_starts"], arrays[f"{name}_lens"])

    item_ids = arrays.get("item_ids")
    if item_ids is not None and item_ids.dtype.kind == "U":
        item_ids = item_ids.astype(object)
    return SessionSplit(
        train=ragged("train"),
        train_targets=arrays["train_targets"],
        test=ragged("test"),
        test_targets=arrays["test_targets"],
        n_items=int(meta["n_items"]),
        source=f"{meta['source']} [cached: {cache_file}]",
        sessions=ragged("session") if meta["has_sessions"] else None,
        item_ids=item_ids,
        stats=meta.get("stats"),
    )
