"""RecBole ``hyper.test`` files -> Hydra sweep parameters (parsed, never evaluated).

RecBole's ``run_hyper.py`` ``eval``s these values; here each line ``name type range`` is parsed with a
strict grammar: ``choice [v, ...]`` (numbers, quoted strings, quoted or bare lists), ``uniform a,b``,
``quniform a,b,q``, ``loguniform a,b`` (bounds are natural logs, as RecBole/hyperopt define them).
Names map onto this project's keys; a list value of ``dropout_probs`` maps onto its named config-group
option, so the seed's hyper.test gives the same study as ``conf/sweep.yaml``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from narm_lightning import CONF_DIR
from narm_lightning.errors import ConfigError
from narm_lightning.io import read_text_lines
from narm_lightning.recbole.config import SHORTCUT_GROUPS
from narm_lightning.recbole.keys import KEY_MAP

LOG_BOUND = 700  # e^±700 is about 10^±304: beyond, a float is 0 or inf
MAX_QUNIFORM_VALUES = 1_000  # a grid line; the whole grid is bounded too (sweeping.space.MAX_GRID_POINTS)
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _group_options(conf_dir: Path, group: str) -> dict[str, Any]:
    """Option name -> the value it sets, read from ``conf/<group>/*.yaml``."""
    options = {}
    for file in sorted((conf_dir / group).glob("*.yaml")):
        data = yaml.safe_load(file.read_text()) or {}
        options[file.stem] = data.get("model", {}).get(group)
    return options


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {text!r} is not a finite number.")
    return value


def _choice_values(text: str, where: str) -> list[Any]:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        values = None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: choice needs a non-empty list like [0.01,0.001]; got {text!r}.")
    out = []
    for value in values:
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = yaml.safe_load(value)  # '[0.25,0.5]': a quoted list, as RecBole files write them
            except yaml.YAMLError:
                raise ConfigError(f"{where}: choice value {value!r} is not a list like '[0.25,0.5]'.") from None
        if not isinstance(value, (int, float, str, list)) or isinstance(value, bool):
            raise ConfigError(f"{where}: choice value {value!r} is not a number, string or list.")
        if isinstance(value, str) and not _NAME.fullmatch(value):
            raise ConfigError(f"{where}: choice value {value!r} is not a plain name (letters, digits, _ . -).")
        out.append(value)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _choice_for(name: str, values: list[Any], conf_dir: Path, where: str) -> tuple[str, str]:
    """(key or group to sweep, Hydra sweep expression) for a categorical."""
    if name in SHORTCUT_GROUPS:
        options = _group_options(conf_dir, name)
        names = []
        for value in values:
            match = [opt for opt, v in options.items() if v == value or (not isinstance(v, list) and opt == str(value))]
            if not match:
                break
            names.append(match[0])
        else:
            return name, f"choice({','.join(names)})"
    return KEY_MAP.get(name, name), f"choice({','.join(_fmt(v) for v in values)})"


def parse_hyper_line(line: str, lineno: int, source: str, conf_dir: Path = CONF_DIR) -> tuple[str, str] | None:
    """One ``name type range`` line -> (key, Hydra sweep expression); ``None`` for blanks and comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    where = f"{source}, line {lineno}"
    parts = text.split(maxsplit=2)
    if len(parts) != 3:
        raise ConfigError(f"{where}: expected 'name type range' (e.g. 'learning_rate choice [0.01,0.001]'); "
                          f"got {text!r}.")
    name, kind, spec = parts
    if kind == "choice":
        return _choice_for(name, _choice_values(spec, where), conf_dir, where)
    bounds = [_number(x.strip(), where) for x in spec.split(",")]
    key = KEY_MAP.get(name, name)
    if kind == "uniform" and len(bounds) == 2 and bounds[0] < bounds[1]:
        return key, f"interval({bounds[0]!r},{bounds[1]!r})"
    if kind == "loguniform" and len(bounds) == 2 and bounds[0] < bounds[1]:
        if not -LOG_BOUND <= bounds[0] < bounds[1] <= LOG_BOUND:  # exp() of these is 0 or overflows a float
            raise ConfigError(f"{where}: loguniform {spec} has natural-log bounds outside [-{LOG_BOUND}, {LOG_BOUND}]"
                              f" (e^{bounds[1]:g} is no number a key can take); RecBole's bounds are logs, e.g. "
                              "loguniform -8,0 for 0.0003 to 1.")
        low, high = math.exp(bounds[0]), math.exp(bounds[1])
        return key, f"tag(log,interval({low!r},{high!r}))"
    if kind == "quniform" and len(bounds) == 3 and bounds[0] < bounds[1] and bounds[2] > 0:
        low, high, q = bounds
        count = (high - low) / q  # counted before any list is made: 0,1,1e-300 would be 10^300 values
        if not count <= MAX_QUNIFORM_VALUES:
            raise ConfigError(f"{where}: quniform {spec} has about {count:.3g} values, more than "
                              f"{MAX_QUNIFORM_VALUES:,}; use a coarser q.")
        steps = range(round(low / q), round(high / q) + 1)
        values = [round(i * q, 12) for i in steps]
        values = [int(v) if float(v).is_integer() and float(q).is_integer() else v for v in values]
        return key, f"choice({','.join(_fmt(v) for v in values)})"
    raise ConfigError(
        f"{where}: {kind} {spec!r} is not one of: choice [..], uniform a,b (a<b), quniform a,b,q (a<b, q>0), "
        "loguniform a,b (natural-log bounds, a<b)."
    )


def read_hyper_file(path: str | Path, conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """A whole hyper.test file as ``{key: sweep expression}`` in file order."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path}: no such file; expected a RecBole hyper.test file.")
    params: dict[str, str] = {}
    what = "a RecBole hyper.test file (text lines 'name type range')"
    for lineno, line in enumerate(read_text_lines(path, what), start=1):
        parsed = parse_hyper_line(line, lineno, str(path), conf_dir)
        if parsed is not None:
            if parsed[0] in params:
                raise ConfigError(f"{path}, line {lineno}: {parsed[0]} is given twice.")
            params[parsed[0]] = parsed[1]
    if not params:
        raise ConfigError(f"params file {path}: holds no 'name type range' line.")
    return params


PARAMS_FILE_FLAGS = ("--params-file", "--params_file")


def expand_params_file_arg(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """``sweep.py -m --params-file=hyper.test``: the file becomes the whole search space.

    Hydra's own argument parser knows no such flag, so ``sweep.py`` rewrites ``argv`` before Hydra sees
    it: the flag goes, ``hydra.sweeper.params=null`` drops the default space, and each line of the file
    becomes a sweep override, except for keys the command line sweeps itself (those win).
    """
    out: list[str] = []
    path: str | None = None
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in PARAMS_FILE_FLAGS:
            path = value if eq else next(args, None)
            if not path:
                raise ConfigError(f"{flag} needs a file: {flag}=hyper.test")
        else:
            out.append(arg)
    if path is None:
        return argv
    given = {a.split("=", 1)[0].lstrip("+~") for a in out[1:] if "=" in a and not a.startswith("-")}
    params = read_hyper_file(path, conf_dir)
    return [*out, "hydra.sweeper.params=null", *(f"{k}={v}" for k, v in params.items() if k not in given)]
