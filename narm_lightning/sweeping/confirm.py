"""The confirm step: retrain the study's best configs and the default config over several seeds, then say
with numbers whether the best beats the default or the difference is seed noise.

A sweep picks its winner on one validation run per config; seeds alone move NARM's metrics by about as much
as the configs differ, so a winner is only a winner once it is retrained. Each (config, seed) job's results
are stored in the study as soon as it ends (a user attr), so an interrupted confirm resumes where it stopped.
The statistics: mean, sample std, a 95% Student-t interval of the mean, and a paired t-test against the
default config over the seeds both have (same seed: same data order and initial weights, so pairing removes
the seed's share of the spread). Knows nothing of NARM: each job returns its metrics (``job_metrics``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIRM_ATTR = "confirm"  # study user attr prefix: confirm:<label>:<seed> -> {"params", "metrics"} or {"error"}
STOPPED_ATTR = "confirm_stopped"  # confirm_stopped:<label>:<seed> -> the folder of that job's stopped run
DEFAULT_LABEL = "default"
CSV_FILE = "confirm.csv"
MARKDOWN_FILE = "confirm.md"


@dataclass(frozen=True)
class Candidate:
    """One config to retrain: ``default`` (no searched parameter set) or ``trial <n>`` with its params."""

    label: str
    params: dict[str, Any]


def candidates(study: Any, top: int, baseline: bool) -> list[Candidate]:
    """The default config (if ``baseline``) and the ``top`` complete trials, best first, distinct params."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    chosen: list[Candidate] = [Candidate(DEFAULT_LABEL, {})] if baseline else []
    seen: set[str] = set()
    for trial in sorted(complete, key=lambda t: sign * float(t.value)):
        key = json.dumps(trial.params, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Candidate(f"trial {trial.number}", dict(trial.params)))
        if len(chosen) - baseline >= top:
            break
    return chosen


def attr_key(label: str, seed: int) -> str:
    return f"{CONFIRM_ATTR}:{label}:{seed}"


def stopped_key(label: str, seed: int) -> str:
    return f"{STOPPED_ATTR}:{label}:{seed}"


def stored(study: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """``(label, seed) -> {"params", "metrics"} | {"error"}`` for every confirm job already run."""
    out = {}
    for key, value in study.user_attrs.items():
        if key.startswith(CONFIRM_ATTR + ":"):
            _, label, seed = key.split(":")
            out[(label, int(seed))] = value
    return out


def job_metrics(value: Any, results_key: str) -> dict[str, float]:
    """The numeric metrics a confirm job returned: ``value["results"][results_key]`` (``trials.py`` says the shape
    of a job's return)."""
    results = value.get("results") if isinstance(value, Mapping) else None
    section = results.get(results_key) if isinstance(results, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError(f"the task returned no mapping of metrics under results.{results_key} (got {value!r:.200})")
    return {str(k): float(v) for k, v in section.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@dataclass(frozen=True)
class Row:
    """One config and one metric over the seeds."""

    label: str
    metric: str
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    diff: float | None  # mean paired difference to the default (None for the default itself)
    rel_diff: float | None
    p_value: float | None  # two-sided paired t-test against the default over the common seeds
    n_paired: int


def summarize(results: Mapping[tuple[str, int], Mapping[str, Any]], labels: Sequence[str],
              metrics: Sequence[str] | None = None) -> list[Row]:
    """Mean, std, 95% CI and the paired test against ``default`` for every (config, metric)."""
    from scipy import stats  # Student-t quantiles and the paired test: scipy does them right

    per: dict[str, dict[int, dict[str, float]]] = {}
    for (label, seed), value in results.items():
        if "metrics" in value:
            per.setdefault(label, {})[seed] = value["metrics"]
    names = list(metrics or sorted({m for runs in per.values() for r in runs.values() for m in r}))
    rows = []
    for label in labels:
        runs = per.get(label, {})
        for metric in names:
            values = [runs[s][metric] for s in sorted(runs) if metric in runs[s]]
            n = len(values)
            if n == 0:
                continue
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if n > 1 else float("nan")
            half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else float("nan")
            diff = rel = p = None
            n_paired = 0
            base = per.get(DEFAULT_LABEL, {})
            if label != DEFAULT_LABEL and base:
                common = [s for s in sorted(runs) if s in base and metric in runs[s] and metric in base[s]]
                n_paired = len(common)
                if common:
                    a = [runs[s][metric] for s in common]
                    b = [base[s][metric] for s in common]
                    diff = statistics.fmean(x - y for x, y in zip(a, b))
                    base_mean = statistics.fmean(b)
                    rel = diff / base_mean if base_mean else None
                    # identical differences have no spread: the t statistic is undefined, not "p = 0"
                    if n_paired > 1 and statistics.stdev(x - y for x, y in zip(a, b)) > 0:
                        p = float(stats.ttest_rel(a, b).pvalue)
            rows.append(Row(label, metric, n, mean, std, mean - half, mean + half, diff, rel, p, n_paired))
    return rows


def _f(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


CSV_COLUMNS = ["config", "params", "metric", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_default",
               "rel_diff_vs_default", "p_value_paired", "n_paired"]


def table(rows: Sequence[Row], params: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The confirm table's rows as confirm.csv has them (``CSV_COLUMNS``; None for an empty cell)."""
    return [dict(zip(CSV_COLUMNS, [r.label, json.dumps(params.get(r.label, {}), sort_keys=True, default=str),
                                   r.metric, r.n, r.mean, r.std, r.ci_low, r.ci_high, r.diff, r.rel_diff, r.p_value,
                                   r.n_paired]))
            for r in rows]


def to_csv(rows: Sequence[Row], params: Mapping[str, Mapping[str, Any]]) -> str:
    from narm_lightning.sweeping.report import as_csv

    return as_csv(table(rows, params), CSV_COLUMNS)


def to_markdown(rows: Sequence[Row], params: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> str:
    """The confirm table: one line per config and metric."""
    lines = [f"Seeds {', '.join(map(str, seeds))}; mean ± sample std, 95% Student-t interval of the mean; paired "
             "t-test against the default config over the same seeds (two-sided).", "",
             "| config | params | metric | n | mean ± std | 95% CI | vs default | p (paired) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shown = ", ".join(f"{k}={v}" for k, v in params.get(r.label, {}).items()) or "(defaults)"
        vs = "" if r.diff is None else f"{r.diff:+.4f}" + (f" ({r.rel_diff:+.1%})" if r.rel_diff is not None else "")
        spread = f" ± {_f(r.std)}" if _f(r.std) else ""  # one seed so far: no spread, no interval
        ci = f"[{_f(r.ci_low)}, {_f(r.ci_high)}]" if _f(r.ci_low) else "-"
        lines.append(f"| {r.label} | {shown} | {r.metric} | {r.n} | {_f(r.mean)}{spread} | {ci} | {vs} | "
                     f"{_f(r.p_value, 3)} |")
    return "\n".join(lines) + "\n"
