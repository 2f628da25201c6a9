"""RecBole's ``eval_args`` (split, order, group_by, mode): the sequential defaults, RecBole's fill for a partial
mapping, its problems in words, and the sampled modes (``uniN`` / ``popN``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from narm_lightning.config.rules import is_list, is_number

# RecBole 1.2.1's sequential eval_args (recbole/properties/quick_start_config/sequential.yaml + group_by), what
# eval_args: null means and what a partial eval_args on the command line is filled from
SEQUENTIAL_EVAL_ARGS = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}


# what RecBole fills a config file's partial eval_args from (Config._set_default_parameters): its file replaces
# the sequential block whole, so a file without `order` means RO there
RECBOLE_EVAL_FILL = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}


def eval_args_problems(value: Any) -> list[str]:
    """What is wrong with an ``eval_args`` (filled), one phrase a key; empty when this project can honour it."""
    if value is None:
        return []
    if not isinstance(value, Mapping) or not set(value) <= set(SEQUENTIAL_EVAL_ARGS):
        return [f"eval_args is {value!r}; expected null or a mapping of split, order, group_by, mode"]
    args = {**SEQUENTIAL_EVAL_ARGS, **value}
    problems = []
    split = args["split"]
    mode, ratios = next(iter(split.items())) if isinstance(split, Mapping) and len(split) == 1 else (None, None)
    if not ((mode == "LS" and ratios in ("valid_and_test", "test_only"))
            or (mode == "RS" and is_list(ratios) and len(ratios) == 3 and all(is_number(r) and r >= 0 for r in ratios)
                and ratios[0] > 0 and ratios[2] > 0)):
        problems.append(f"eval_args.split is {split!r}; expected {{LS: valid_and_test}}, {{LS: test_only}} or {{RS: "
                        "[a, b, c]} with a, c > 0 and b >= 0 (valid_only would leave no test split; TS, the time "
                        "split, is not supported here)")
    if args["order"] != "TO":
        problems.append(f"eval_args.order is {args['order']!r}; expected TO: RecBole 1.2.1 refuses RO for sequential "
                        "models (\"The ordering args for sequential recommendation has to be 'TO'\"), and a RecBole "
                        "file whose eval_args leaves out order means RO there: add order: TO")
    if args["group_by"] not in ("user", None, "none"):
        problems.append(f"eval_args.group_by is {args['group_by']!r}; expected user or null")
    mode = args["mode"]
    modes = list(mode.values()) if isinstance(mode, Mapping) else [mode]
    if (isinstance(mode, Mapping) and set(mode) != {"valid", "test"}) or not all(map(eval_mode_ok, modes)):
        problems.append(f"eval_args.mode is {mode!r}; expected full, uniN or popN (N candidates drawn uniformly or "
                        "by popularity, e.g. uni100), or {valid: <mode>, test: <mode>} (labeled is for "
                        "point-wise models)")
    elif mode_of(mode, "valid") != "full" or mode_of(mode, "test") != "full":
        if isinstance(split, Mapping) and "RS" in split:
            problems.append(f"eval_args.mode {mode!r} with split {split!r}: sampled candidates need the "
                            "leave-one-out split (LS); under RS RecBole scores all of a user's held-out examples in "
                            "one row, each from its own history, which is no next-item protocol")
    return problems


EVAL_MODE = re.compile(r"^(uni|pop)([1-9][0-9]{0,5})$")


def eval_mode_ok(mode: Any) -> bool:
    """``full``, or RecBole's sampled modes ``uniN`` / ``popN`` (N candidates besides the target)."""
    return mode == "full" or (isinstance(mode, str) and EVAL_MODE.match(mode) is not None)


def mode_of(mode: Any, split: str) -> str:
    """One split's mode of ``eval_args.mode`` (a string for both, or ``{valid: .., test: ..}``)."""
    return str(mode[split]) if isinstance(mode, Mapping) else str(mode)
