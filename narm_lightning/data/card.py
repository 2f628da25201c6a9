"""The protocol card: what a run's figures were measured on, in one plain mapping.

Two numbers are comparable only under the same split, order, grouping, candidates, filters, window and tie
order, on the same file. The card says all of it; it goes into ``results.json``, the checkpoint and the W&B
config, so a figure never travels without its protocol. Plain data only (a checkpoint stays loadable with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from narm_lightning.config.eval_args import SEQUENTIAL_EVAL_ARGS
from narm_lightning.data.protocol import SequentialData
from narm_lightning.io import sha256_file

SELECTION_SPLIT = "valid"  # the only split a model is ever selected or early-stopped on


def protocol_card(cfg: DictConfig, data: SequentialData, fingerprint: str, validating: bool,
                  candidates: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The card of a run on ``data`` under ``cfg`` (``fingerprint``: SHA-256 of the examples themselves;
    ``candidates``: the sampled modes' candidates, identified by their own SHA-256)."""
    d = cfg.data
    clicks = "path" in d  # data=clicks: a user's log, under the session protocol or leave-one-out
    atomic = d.format == "atomic" or (clicks and d.split == "leave_one_out")  # RecBole's protocol
    eval_args = filled_eval_args(cfg)
    if atomic and d.get("benchmark_filename"):
        split: dict[str, Any] = {"benchmark_filename": list(d.benchmark_filename)}  # the files are the split
        ties = "none: the rows of the benchmark files are examples already, in file order"
    elif clicks:
        split = eval_args["split"] if atomic else {"test": f"the sessions of the last {d.test_days} day(s)",
                                                   "valid_ratio": float(d.valid_ratio), "valid_seed": int(cfg.seed)}
        ties = (f"exact: a {'user' if d.user_field else 'session'}'s clicks ordered by {d.order_field or d.time_field}"
                ", equal values in file order" + ("" if atomic else "; sessions with the same date: first_seen"))
    elif atomic:
        split = eval_args["split"]
        recbole = d.get("time_order", "recbole") == "recbole"
        ties = ("recbole: interactions whose times are equal in RecBole's float32 (min-max scaled when "
                "normalize_all) keep their order in the file, as in RecBole" if recbole
                else "exact: interactions with the same timestamp keep their order in the file")
    else:
        split = {"test": "the dataset's own test sessions", "valid_ratio": float(d.valid_ratio),
                 "valid_seed": int(cfg.seed)}
        ties = f"sessions with the same date: {d.tie_order}"
    card: dict[str, Any] = {
        "dataset": str(d.dataset),
        "format": str(d.format),
        "split": split,
        "order": "TO",  # time order (RecBole's only order for sequential models)
        "group_by": ("user" if d.user_field else "session") if clicks else (
            (eval_args["group_by"] if "RS" in split else "user") if atomic else "session"),
        # full: every item ranked (the padding id never); uniN / popN: the target among N fixed candidates
        "mode": eval_args["mode"] if atomic else "full",
        "extra_test_modes": list(cfg.get("extra_test_modes") or []),
        "candidates": ({"seed": int(d.eval_candidates_seed), "file": d.get("eval_candidates"),
                        "sha256": {name: hashlib.sha256(t.numpy().tobytes()).hexdigest()
                                   for name, t in candidates.items()}} if candidates else None),
        "filters": {k: v for k, v in active_filters(d).items() if v is not None} if atomic else {},
        "max_item_list_length": int(d.max_item_list_length),
        "tie_order": ties,
        "files": [{"path": path, "sha256": sha256_file(path)} for path in data.files],
        "examples_sha256": fingerprint,
        "model_selection": ({"split": SELECTION_SPLIT, "metric": str(cfg.valid_metric)} if validating
                            else {"split": None, "metric": None, "note": "no validation: the last epoch is tested"}),
    }
    if clicks and not atomic:
        card["preprocessing"] = {key: d.get(key) for key in ("min_item_support", "test_days", "fraction")}
    elif not atomic and d.format == "raw":
        card["preprocessing"] = {key: d.get(key) for key in ("raw_dataset", "min_item_support", "test_days",
                                                             "sort_by_timeframe", "fraction")}
    check_card(card)
    return card


def active_filters(d: DictConfig) -> dict[str, Any]:
    """RecBole's interaction filters of the ``data`` config, as ``data.filters.filter_rows`` takes them; an
    unset one (or a ``[0,inf)`` interval, which keeps everything) is None."""
    def interval(key: str) -> str | None:
        value = d.get(key)
        return None if value in (None, "[0,inf)") else str(value)

    return {"rm_dup_inter": d.get("rm_dup_inter"), "val_interval": _plain(d.get("val_interval")),
            "user_inter_num_interval": interval("user_inter_num_interval"),
            "item_inter_num_interval": interval("item_inter_num_interval")}


def filled_eval_args(cfg: DictConfig) -> dict[str, Any]:
    """``eval_args`` with every key: the ones left out (or all, for null) are RecBole's sequential defaults."""
    return copy.deepcopy({**SEQUENTIAL_EVAL_ARGS, **(_plain(cfg.get("eval_args")) or {})})


def _plain(value: Any) -> Any:
    """Config nodes as plain lists and dicts: a checkpoint holds plain data only (weights-only loadable)."""
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def check_card(card: dict[str, Any]) -> None:
    """The invariant every figure rests on: the test split never selects a model."""
    split = card["model_selection"]["split"]
    if split not in (SELECTION_SPLIT, None):
        raise AssertionError(f"model selection on {split!r}: only the valid split may select a model")
