"""Search space: Hydra override grammar -> Optuna distributions, and Optuna values -> override strings.

Parsing goes through Hydra's ``OverridesParser`` (never eval), so the sweeper accepts exactly what a
``-m`` command line accepts. Mapping (same as hydra-optuna-sweeper):

* ``a,b,c`` / ``choice(a,b,c)``             -> categorical (a config GROUP swept by name is a categorical
                                               of option names)
* ``range(start,stop[,step])``              -> categorical of the enumerated ints/floats
* ``interval(a,b)``                         -> float uniform
* ``tag(log, interval(a,b))``               -> float log-uniform
* ``int(interval(a,b))``                    -> int uniform; with ``tag(log, ...)`` -> int log-uniform
* anything else (``key=value``)             -> a fixed override passed to every trial
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
)
from hydra.errors import HydraException

from narm_lightning.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_SAFE_STRING = re.compile(r"^[A-Za-z0-9_.\-/+@]+$")
_SCALARS = (str, int, float, bool, type(None))
_NUMBER_LIST = re.compile(r"^\[(-?[0-9][0-9.e+\-]*)(,-?[0-9][0-9.e+\-]*)*\]$")


@dataclass(frozen=True)
class SearchSpace:
    """The swept params (name -> Optuna distribution) and the fixed overrides every trial receives."""

    distributions: dict[str, BaseDistribution]
    fixed_overrides: list[str]

    def identity(self, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
        """What decides a study's results: each swept param's distribution and the fixed overrides, except keys
        under ``ignore`` (logging, progress, threads). Plain data, for hashing and for storing in the study."""
        def key_of(override: str) -> str:
            return override.lstrip("+~").split("=", 1)[0]

        kept = sorted(o for o in self.fixed_overrides
                      if not any(key_of(o) == k or key_of(o).startswith(k + ".") for k in ignore))
        return {"params": {name: repr(dist) for name, dist in sorted(self.distributions.items())}, "fixed": kept}

    def is_discrete(self) -> bool:
        """True when every param has a finite set of values (what the grid sampler needs)."""
        from optuna.distributions import CategoricalDistribution

        return all(isinstance(d, CategoricalDistribution) for d in self.distributions.values())

    def grid(self) -> dict[str, list[Any]]:
        """The search space in GridSampler's format; ConfigError when a param is continuous."""
        from optuna.distributions import CategoricalDistribution

        grid: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ConfigError(
                    f"hydra.sweeper.sampler: the grid sampler needs a finite set of values for every param, "
                    f"but param '{name}' is continuous ({type(dist).__name__}). Use choice(...) or "
                    f"range(...) for '{name}', or pick another sampler (hydra/sweeper/sampler=tpe|random)."
                )
            grid[name] = list(dist.choices)
        points = math.prod(len(v) for v in grid.values())
        if points > MAX_GRID_POINTS:
            counts = " x ".join(f"{name} {len(v):,}" for name, v in grid.items())
            raise ConfigError(
                f"hydra.sweeper.params: a grid of {points:,} points ({counts}), more than {MAX_GRID_POINTS:,}; "
                "it could never be run to the end. Give fewer values (a coarser q in quniform), or sample the "
                "space: hydra/sweeper/sampler=tpe hydra.sweeper.n_trials=<N>."
            )
        return grid

    def check_points(self, groups: frozenset[str] = frozenset(), limit: int = 200) -> list[dict[str, Any]]:
        """Param values that test the whole space before any trial: every combination of the values worth
        composing when there are at most ``limit``; else each param's values in turn, the others at their first.

        Worth composing: every option of a config group and every non-numeric choice; of numbers only the
        extremes (and one int and one float where both occur): the schema's rules on numbers are ranges, and each
        composition costs ~0.2 s (a 1,000-value line took minutes before any trial)."""
        from optuna.distributions import CategoricalDistribution

        values: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                values[name] = list(dist.choices) if name in groups else _extremes(list(dist.choices))
            else:
                values[name] = [dist.low, dist.high]  # type: ignore[attr-defined]
        if not values:
            return [{}]
        total = 1
        for choices in values.values():
            total *= len(choices)
        if total <= limit:
            return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]
        first = {name: choices[0] for name, choices in values.items()}
        return [{**first, name: v} for name, choices in values.items() for v in choices]

    def describe(self, grid: bool) -> str:
        """The space in one line: ``grid of 12 points: lr 2 x n_layers 2 x dropout 3`` or each param's range."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if grid and self.is_discrete():
            counts = " x ".join(f"{name} {len(values)}" for name, values in self.grid().items())
            return f"grid of {self.size()} points: {counts}"
        parts = []
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                shown = ", ".join(map(str, dist.choices[:8])) + (f", ... ({len(dist.choices):,} values)"
                                                                   if len(dist.choices) > 8 else "")
                parts.append(f"{name} {{{shown}}}")
            elif isinstance(dist, (FloatDistribution, IntDistribution)):
                parts.append(f"{name} [{dist.low}, {dist.high}]{' log' if dist.log else ''}")
            else:
                parts.append(f"{name} {dist}")
        return "; ".join(parts)

    def size(self) -> int | None:
        """Number of grid points, or None when the space has a continuous param."""
        if not self.is_discrete():
            return None
        total = 1
        for values in self.grid().values():
            total *= len(values)
        return total


MAX_GRID_POINTS = 100_000  # a grid the grid sampler can hold and a study could finish; 10^8 ran out of memory


def _extremes(choices: list[Any]) -> list[Any]:
    """Of numeric choices, the smallest and largest (and the first int and float if both kinds occur); every
    other choice as it is."""
    numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    if len(numbers) != len(choices) or len(numbers) <= 2:
        return choices
    picked = [min(numbers), max(numbers)]
    picked += [next(c for c in numbers if isinstance(c, kind)) for kind in (int, float)
               if any(isinstance(c, kind) for c in numbers)]
    return list(dict.fromkeys(picked))


def _plain(value: Any) -> Any:
    """A parsed grammar element as a plain Python scalar (QuotedString -> its text)."""
    if isinstance(value, QuotedString):
        return value.text
    return value


def _categorical(name: str, values: list[Any]) -> BaseDistribution:
    """A categorical over scalar values; lists/dicts cannot be Optuna choices, so reject them clearly."""
    from optuna.distributions import CategoricalDistribution

    plain = [_plain(v) for v in values]
    for i, value in enumerate(plain):
        if isinstance(value, list) and all(isinstance(_plain(v), (int, float)) and not isinstance(_plain(v), bool)
                                           for v in value):
            # a list of numbers (model.dropout_probs=[0.3,0.3], as RecBole's hyper.test writes them): Optuna's
            # choices are scalars, so the list is its override text, given back bare (format_value)
            plain[i] = "[" + ",".join(format_value(_plain(v)) for v in value) + "]"
        elif not isinstance(value, _SCALARS):
            raise ConfigError(
                f"hydra.sweeper.params.{name}: choice values must be scalars (str, int, float, bool, null) or lists "
                f"of numbers, got {value!r}. Sweep a config group or an index instead."
            )
    if len(plain) == 0:
        raise ConfigError(f"hydra.sweeper.params.{name}: the sweep has no values.")
    if len(set(map(repr, plain))) != len(plain):
        raise ConfigError(f"hydra.sweeper.params.{name}: duplicate values in {plain}.")
    return CategoricalDistribution(plain)


def _interval(name: str, sweep: IntervalSweep) -> BaseDistribution:
    """interval(a,b) with optional int cast and ``log`` tag -> Float/IntDistribution."""
    from optuna.distributions import FloatDistribution, IntDistribution

    assert sweep.start is not None and sweep.end is not None
    unknown = set(sweep.tags) - {"log"}
    if unknown:
        raise ConfigError(
            f"hydra.sweeper.params.{name}: unknown tag(s) {sorted(unknown)}; only 'log' is supported "
            f"(e.g. tag(log, interval(1e-4, 1e-1)))."
        )
    log = "log" in sweep.tags
    if sweep.start >= sweep.end:
        raise ConfigError(f"hydra.sweeper.params.{name}: interval({sweep.start}, {sweep.end}) is empty.")
    if log and sweep.start <= 0:
        raise ConfigError(f"hydra.sweeper.params.{name}: a log interval needs start > 0, got {sweep.start}.")
    if isinstance(sweep.start, int) and isinstance(sweep.end, int):
        return IntDistribution(sweep.start, sweep.end, log=log)
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log)


def override_to_distribution(override: Override) -> BaseDistribution:
    """One parsed sweep override -> its Optuna distribution."""
    name = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        if value.tags:
            raise ConfigError(f"hydra.sweeper.params.{name}: tags are only supported on interval(...).")
        if override.value_type is not None and override.value_type.name == "GLOB_CHOICE_SWEEP":
            return _categorical(name, list(override.sweep_iterator()))
        return _categorical(name, value.list)
    if isinstance(value, RangeSweep):
        return _categorical(name, list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        return _interval(name, value)
    if override.value_type is not None and override.value_type.name == "GLOB_CHOICE_SWEEP":
        return _categorical(name, list(override.sweep_iterator()))
    raise ConfigError(f"hydra.sweeper.params.{name}: unsupported sweep '{override.input_line}'.")


def _parse(parser: OverridesParser, lines: list[str], origin: str) -> list[Override]:
    """Parse override lines, turning Hydra's grammar errors into a ConfigError naming their origin."""
    try:
        return parser.parse_overrides(lines)
    except HydraException as exc:
        raise ConfigError(f"{origin}: cannot parse {lines} with Hydra's override grammar: {exc}") from exc


def parse_search_space(
    params: dict[str, Any] | None, arguments: list[str], parser: OverridesParser | None = None
) -> SearchSpace:
    """Merge ``hydra.sweeper.params`` with command-line overrides (the command line wins per key)."""
    parser = parser or OverridesParser.create()
    by_key: dict[str, Override] = {}
    for key, value in (params or {}).items():
        text = value if isinstance(value, str) else str(value)
        (override,) = _parse(parser, [f"{key}={text}"], f"hydra.sweeper.params.{key}")
        by_key[override.get_key_element()] = override
    for override in _parse(parser, list(arguments), "command line"):
        by_key[override.get_key_element()] = override

    distributions: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for key, override in by_key.items():
        if override.is_sweep_override():
            if override.is_hydra_override():
                raise ConfigError(f"{key}: sweeping Hydra's own config is not supported.")
            distributions[key] = override_to_distribution(override)
        else:
            fixed.append(override.input_line or f"{key}={override.get_value_element_as_str()}")
    return SearchSpace(distributions=distributions, fixed_overrides=fixed)


def format_value(value: Any) -> str:
    """A sampled value as the right-hand side of a Hydra override (quoted when the grammar needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _NUMBER_LIST.match(text):  # a swept list of numbers (see _categorical): a list again on the command line
        return text
    if _SAFE_STRING.match(text) and text.lower() not in {"null", "true", "false", "nan", "inf", "-inf"}:
        try:
            float(text)
        except ValueError:
            return text
    return QuotedString(text=text, quote=Quote.single).with_quotes()


def params_to_overrides(params: dict[str, Any], groups: frozenset[str] = frozenset()) -> list[str]:
    """Sampled params -> ``key=value`` overrides in a stable order.

    A config group's option is always a name, so ``hidden_size=128`` goes out as ``hidden_size='128'``:
    Hydra rejects an int as a group choice.
    """
    return [f"{key}={format_value(str(value) if key in groups else value)}" for key, value in params.items()]


MAX_PREFIX_CHARS = 60  # a study name is a folder and a file name: the swept values joined stay readable and short


def study_prefix_from(config: Any, key: str | None, space: SearchSpace) -> str | None:
    """The value of ``key`` in the sweep's config, as the start of a derived study name; where the space sweeps that
    key, or the config group it lies in, the swept values joined by ``+`` instead (a study over ``data=diginetica,
    yoochoose1_64`` is not named after the default dataset). None without a key, or for a swept range."""
    from omegaconf import OmegaConf
    from optuna.distributions import CategoricalDistribution

    if not key:
        return None
    for name, dist in sorted(space.distributions.items()):
        if key == name or key.startswith(name + "."):
            if not isinstance(dist, CategoricalDistribution):
                return None
            joined = "+".join(str(_plain(c)) for c in dist.choices)
            return joined if len(joined) <= MAX_PREFIX_CHARS else f"{len(dist.choices)}-{name}"
    value = OmegaConf.select(config, key, default=None)
    return None if value is None else str(value)
