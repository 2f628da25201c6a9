"""Where a run's data is, found before anything is read: the ``data`` keys -> the files a loader will read.

Why a module of its own: a wrong path is refused before Lightning and the readers load (``cli/apps.py``: ~2 s
instead of ~6 s), and the loaders (``data/sources.py``) look exactly where that check looked, since both call
these functions. It looks at paths only: no file is read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from narm_lightning.config.data_schema import RAW_DATASETS
from narm_lightning.data.download import fetch_ml100k
from narm_lightning.errors import DataError
from narm_lightning.io import require_regular_file

FETCHERS = {"ml-100k": fetch_ml100k}  # what data.download=true fetches, and how (data/download.py: stdlib only)
RAW_FILES = dict(zip(RAW_DATASETS, ("train-item-views.csv", "yoochoose-clicks.dat"), strict=True))  # in <raw_folder>/
_RAW_HELP = {
    "diginetica": "DIGINETICA cannot be downloaded automatically (its owners' terms): get 'train-item-views.csv' "
                  "from the CIKM Cup 2016 site (https://competitions.codalab.org/competitions/11161, "
                  "dataset-train-diginetica) and put it at {path}",
    "yoochoose": "YOOCHOOSE cannot be downloaded automatically (its owners' terms): get 'yoochoose-clicks.dat' "
                 "from the RecSys Challenge 2015 data (https://recsys.acm.org/recsys15/challenge/, yoochoose-data.7z) "
                 "and put it at {path}",
}

SourceKind = Literal["benchmark", "atomic", "clicks", "sessions"]
SplitKind = Literal["session_text", "session_pickle", "raw"]


def find_in_roots(roots: Sequence[str | Path], folder: str, name: str) -> Path | None:
    """First ``<root>/<folder>/<name>`` that exists, in the order the roots are given."""
    for root in roots:
        candidate = Path(root).expanduser() / folder / name
        if candidate.exists():
            return candidate
    return None


def source_kind(d: Any) -> SourceKind:
    """Which loader a ``data`` config node goes to: RecBole's pre-split atomic files, one atomic file, a user's
    click log (``data=clicks``), or a session dataset."""
    if d.format == "atomic":
        return "benchmark" if d.get("benchmark_filename") else "atomic"
    return "clicks" if "path" in d else "sessions"


def find_atomic(dataset: str, roots: Sequence[str], download: bool) -> Path | None:
    """``<root>/<dataset>/<dataset>.inter`` in the first root that has it; None when it is to be fetched."""
    found = find_in_roots(roots, dataset, f"{dataset}.inter")
    if found is not None or (download and dataset in FETCHERS):
        return found
    looked = ", ".join(str(Path(r) / dataset / f"{dataset}.inter") for r in roots)
    hint = (" data.download=true fetches it." if dataset in FETCHERS
            else f" Only {', '.join(FETCHERS)} can be fetched automatically.")
    raise DataError(f"data.dataset={dataset!r}: no atomic file found (looked at {looked}). data.root names the folder "
                    f"of datasets; data.extra_roots=[<folder>, ...] adds read-only folders to search.{hint}")


def find_benchmark(dataset: str, roots: Sequence[str], parts: Sequence[str]) -> list[Path]:
    """RecBole's ``benchmark_filename``: ``<dataset>.<part>.inter`` for each part, beside the first part's file in
    the first root that has it."""
    first = find_in_roots(roots, dataset, f"{dataset}.{parts[0]}.inter")
    if first is None:
        looked = ", ".join(str(Path(r) / dataset / f"{dataset}.{parts[0]}.inter") for r in roots)
        raise DataError(f"data.benchmark_filename={list(parts)}: no {dataset}.{parts[0]}.inter (looked at {looked}); "
                        "expected RecBole's pre-split files <dataset>.<part>.inter side by side.")
    paths = [first.parent / f"{dataset}.{part}.inter" for part in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"data.benchmark_filename={list(parts)}: {', '.join(missing)} not found beside {first}; "
                        "expected one file per part.")
    return paths


def find_session_split(dataset: str, fmt: str, roots: Sequence[str], raw_dataset: str | None,
                       raw_folder: str | None) -> tuple[SplitKind, Path]:
    """A session dataset's first file: ``auto`` takes the first that exists, in that order:
    ``<root>/<dataset>/train_sessions.txt`` (text), ``<root>/<dataset>/train.txt`` (pickles),
    ``<root>/<raw_folder>/<raw file>`` (a raw click log, or where it should be put when no root has it)."""
    text = find_in_roots(roots, dataset, "train_sessions.txt") if fmt in ("auto", "session_text") else None
    if text is not None:
        return "session_text", text
    pickled = find_in_roots(roots, dataset, "train.txt") if fmt in ("auto", "session_pickle") else None
    if pickled is not None:
        return "session_pickle", pickled
    if fmt in ("auto", "raw") and raw_dataset in RAW_FILES:
        folder = raw_folder or raw_dataset
        raw = find_in_roots(roots, folder, RAW_FILES[raw_dataset])
        return "raw", raw or Path(roots[0]).expanduser() / folder / RAW_FILES[raw_dataset]
    wanted = {"session_text": "train_sessions.txt + test.tsv", "session_pickle": "train.txt + test.txt",
              "auto": "train_sessions.txt + test.tsv, or train.txt + test.txt"}.get(fmt, "")
    raise DataError(f"data.dataset={dataset!r} (data.format={fmt}): no {wanted} under "
                    f"{', '.join(str(Path(r) / dataset) for r in roots)}.")


def check_raw(dataset: str, path: Path) -> Path:
    """``path`` if it is a readable raw click log of ``dataset``, else a ``DataError`` saying where to get it."""
    if not path.exists():
        raise DataError(f"{path}: file not found. " + _RAW_HELP[dataset].format(path=path))
    return require_regular_file(path, "the raw click log")


def locate_data(d: Any) -> list[Path]:
    """The files a run's ``data`` node names, each found (or to be fetched: then none), else the ``DataError`` its
    loader would raise."""
    roots = [d.root, *(d.extra_roots or [])]
    kind = source_kind(d)
    if kind == "benchmark":
        return find_benchmark(d.dataset, roots, list(d.benchmark_filename))
    if kind == "atomic":
        found = find_atomic(d.dataset, roots, d.download)
        return [found] if found else []
    if kind == "clicks":
        return [require_regular_file(Path(d.path).expanduser(), "a click log (data.path)")]
    split, path = find_session_split(d.dataset, d.format, roots, d.get("raw_dataset"), d.get("raw_folder"))
    return [check_raw(d.raw_dataset, path) if split == "raw" else path]
