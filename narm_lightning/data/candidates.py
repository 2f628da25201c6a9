"""Sampled evaluation (RecBole's ``uniN`` / ``popN``), with candidates drawn once and kept.

RecBole's sequential evaluation in ``uni100`` scores each held-out row's target against 100 negatives drawn for
that row (uniformly from the real items, or in proportion to how often each item is an example's target for
``pop100``), with replacement, redrawn only where equal to the row's own target (its ``RepeatableSampler``); the
target's rank among them gives the metrics. RecBole redraws them at every evaluation, so two epochs, two models
or two trials are scored against different candidates (RecBole issue 2077). Here they are drawn once, from
``data.eval_candidates_seed`` (not the training seed: every seed and trial of a study shares them), written to
the run folder as ``eval_candidates.npz`` and accepted back with ``data.eval_candidates=<path>``.

The file holds integer arrays and a JSON string only, read with ``allow_pickle=False``: it never runs code,
and its members' sizes are checked against the data before any is read.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from narm_lightning.config.eval_args import EVAL_MODE
from narm_lightning.data.protocol import SequentialData
from narm_lightning.errors import DataError
from narm_lightning.io import write_bytes_atomic
from narm_lightning.model.negatives import PopularityNegativeSampler, UniformNegativeSampler

FILE_NAME = "eval_candidates.npz"
FORMAT = "narm-lightning eval candidates 1"


@dataclass(frozen=True)
class Mode:
    """One evaluation mode: ``full`` (every item ranked) or ``n`` candidates drawn ``uni`` or ``pop``."""

    name: str

    @property
    def sampled(self) -> bool:
        return self.name != "full"

    @property
    def distribution(self) -> str:
        return "uniform" if self.name.startswith("uni") else "popularity"

    @property
    def n(self) -> int:
        match = EVAL_MODE.match(self.name)
        return int(match.group(2)) if match else 0


def draw(target: torch.Tensor, mode: Mode, n_items: int, counts: torch.Tensor, alpha: float,
         generator: torch.Generator) -> torch.Tensor:
    """``[rows, N]`` candidate ids for rows with these targets: RecBole's draw (with replacement, never the
    row's target, never the padding id). ``counts``: each id's count as an example's target (popularity)."""
    if mode.distribution == "uniform":
        return UniformNegativeSampler(n_items, mode.n)(target, generator=generator)
    return PopularityNegativeSampler(counts, mode.n, alpha)(target, generator=generator)


def score_on_candidates(scores: torch.Tensor, target: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Full-catalogue ``scores`` with every item but the target and the row's candidates at ``-inf``: ranking
    then places the target among 1 + (distinct) candidates, as RecBole's score matrix does."""
    out = torch.full_like(scores, float("-inf"))
    out.scatter_(1, candidates, scores.gather(1, candidates))
    rows = target.view(-1, 1)
    return out.scatter_(1, rows, scores.gather(1, rows))


def member(split: str, mode: Mode) -> str:
    return f"{split}.{mode.name}"


def save(path: Path, candidates: dict[str, torch.Tensor], meta: dict) -> None:
    """``{"valid.uni100": [rows, 100], ...}`` and the facts they were drawn under, written atomically."""
    import io

    buffer = io.BytesIO()
    arrays = {name: t.numpy().astype(np.int64) for name, t in candidates.items()}
    np.savez_compressed(buffer, meta=np.array(json.dumps({"format": FORMAT, **meta})), **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load(path: str | Path, wanted: dict[str, torch.Tensor], n_items: int, examples_sha256: str) -> dict[str,
                                                                                                     torch.Tensor]:
    """The members ``wanted`` names (member -> the rows' targets) from a saved file, each checked: drawn for
    these very examples, one row per target, ids of real items, never the row's own target."""
    path = Path(path)
    where = f"data.eval_candidates={path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file; expected an {FILE_NAME} written in an earlier run's folder.")
    try:
        with zipfile.ZipFile(path) as archive:
            sizes = {info.filename.removesuffix(".npy"): info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{where}: not an .npz archive ({exc}); expected an {FILE_NAME} from a run folder.") from None
    for name, target in wanted.items():
        bound = 1024 + 8 * len(target) * Mode(name.split(".", 1)[1]).n  # header + int64 rows x N
        if name not in sizes:
            have = ", ".join(sorted(set(sizes) - {"meta"}))
            raise DataError(f"{where}: holds no candidates for {name} (it has: {have}); expected a file written by "
                            "a run with the same eval modes.")
        if sizes[name] > bound:
            raise DataError(f"{where}: member {name} is {sizes[name]:,} bytes, more than {len(target):,} rows of "
                            f"candidates can take; expected the file of a run on these examples.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"])) if sizes.get("meta", 1 << 20) < 1 << 20 else {}
            arrays = {name: npz[name] for name in wanted}
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: cannot be read as candidates ({exc}).") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{where}: is not an {FILE_NAME} of narm-lightning (format {meta.get('format')!r}).")
    if meta.get("examples_sha256") != examples_sha256:
        raise DataError(f"{where}: was drawn for other examples (their SHA-256 {str(meta.get('examples_sha256'))[:12]}"
                        f"..., these {examples_sha256[:12]}...); expected the file of a run on the same data, "
                        "filters and split.")
    out = {}
    for name, target in wanted.items():
        array = arrays[name]
        n = Mode(name.split(".", 1)[1]).n
        if array.dtype.kind not in "iu" or array.shape != (len(target), n):
            raise DataError(f"{where}: {name} is a {array.dtype} array of shape {array.shape}; expected integers of "
                            f"shape ({len(target)}, {n}).")
        tensor = torch.from_numpy(array.astype(np.int64))
        if len(tensor) and (int(tensor.min()) < 1 or int(tensor.max()) >= n_items):
            raise DataError(f"{where}: {name} holds item ids outside 1..{n_items - 1}; expected ids of this "
                            "dataset's items.")
        if bool(tensor.eq(target.view(-1, 1)).any()):
            raise DataError(f"{where}: {name} has a row whose candidates include its own target; expected "
                            "negatives only.")
        out[name] = tensor
    return out


def needed(modes: dict[str, list[Mode]], data: SequentialData) -> dict[str, torch.Tensor]:
    """member -> the targets of its rows, for every sampled (split, mode) with rows."""
    parts = {"valid": data.valid, "test": data.test}
    return {member(split, mode): parts[split].target for split, split_modes in modes.items()
            for mode in split_modes if mode.sampled and len(parts[split])}


def prepare(modes: dict[str, list[Mode]], data: SequentialData, examples_sha256: str, seed: int, alpha: float,
            path: str | None) -> dict[str, torch.Tensor]:
    """The candidates of every sampled (split, mode): read from ``path``, else drawn once from ``seed`` (each
    member from its own generator, so adding a mode never changes another's candidates)."""
    wanted = needed(modes, data)
    if not wanted:
        return {}
    if path is not None:
        return load(path, wanted, data.n_items, examples_sha256)
    counts = torch.bincount(torch.cat([data.train.target, data.valid.target, data.test.target]),
                            minlength=data.n_items)
    out = {}
    for name, target in wanted.items():
        split, mode = name.split(".", 1)
        offset = sum(map(ord, name))  # a fixed stream per member, apart from the others
        out[name] = draw(target, Mode(mode), data.n_items, counts, alpha,
                         torch.Generator().manual_seed(seed * 1009 + offset))
    return out
