"""Where a persistent sweep study stands, as Markdown tables: every trial's params, state, value, epochs
reported and wall time, then the totals (trials/hour), the grid one line per point (best first; pruned or
not; not run yet) and the confirm step's table if it has run.

    python bench/study_status.py [--study hyper-test-ml-100k] [--storage sqlite:///optuna/<study>.db]

Read-only: it opens the storage, never a trial. ``make study-hyper-test-status`` prints issue 20's study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
from typing import Any


def grid_points(trials: list[Any], stale: set[int]) -> list[tuple[dict[str, Any], Any]]:
    """Every point of a categorical grid with the trial that stands for it (the last one not re-run as stale;
    None while no trial has run it). Empty when the space is not a categorical grid."""
    from optuna.distributions import CategoricalDistribution

    distributions = next((t.distributions for t in trials if t.distributions), {})
    if not distributions or not all(isinstance(d, CategoricalDistribution) for d in distributions.values()):
        return []
    names = list(distributions)
    by_point: dict[tuple[str, ...], Any] = {}
    for t in trials:
        if t.number not in stale and set(t.params) == set(names):
            by_point[tuple(json.dumps(t.params[n], default=str) for n in names)] = t
    return [(dict(zip(names, combo, strict=True)), by_point.get(tuple(json.dumps(v, default=str) for v in combo)))
            for combo in itertools.product(*(distributions[n].choices for n in names))]


def point_value(trial: Any) -> float | None:
    """A point's figure: a complete trial's value, a pruned one's last reported value."""
    from optuna.trial import TrialState

    if trial is None:
        return None
    if trial.state == TrialState.COMPLETE:
        return float(trial.value)
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return float(list(trial.intermediate_values.values())[-1])
    return None


def grid_lines(points: list[tuple[dict[str, Any], Any]], names: list[str]) -> list[str]:
    """The grid, one line per point, best first: complete (value), pruned (its last value), then the rest."""
    from optuna.trial import TrialState

    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.RUNNING: 1, TrialState.WAITING: 2}
    ordered = sorted(points, key=lambda p: (rank.get(p[1].state, 3) if p[1] is not None else 4,
                                            -(point_value(p[1]) or 0.0)))
    lines = ["| " + " | ".join(names) + " | state | value | epochs | trial |", "|" + "---|" * (len(names) + 4)]
    for params, trial in ordered:
        v = point_value(trial)
        last = ""
        if v is None and trial is not None and trial.intermediate_values:  # running: where it is now
            last = f"{list(trial.intermediate_values.values())[-1]:.4f} (last)"
        if trial is None:
            state, epochs, number = "not run yet", "", ""
        else:
            state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(trial.state,
                                                                                       trial.state.name.lower())
            epochs, number = str(len(trial.intermediate_values)), str(trial.number)
        lines.append("| " + " | ".join(str(params[n]) for n in names) + f" | {state} | "
                     + (f"{v:.4f}" if v is not None else last) + f" | {epochs} | {number} |")
    return lines


def points_done(points: list[tuple[dict[str, Any], Any]]) -> tuple[int, int]:
    """(points done, of them pruned)."""
    from optuna.trial import TrialState

    done = [t for _, t in points if t is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return len(done), sum(1 for t in done if t.state == TrialState.PRUNED)


def trial_hours(trials: list[Any]) -> float:
    """Hours the study's trials ran, every attempt counted (a stopped one's epochs are continued, or were spent)."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start) / 3600


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]")


def confirm_hours(console: str) -> tuple[float, int]:
    """Hours the confirm step ran, and in how many sittings, read from the study's console log (``make
    study-hyper-test`` appends every sitting to it): in each sitting, from the sweeper's "Confirm step:" line to
    the sitting's last stamped line. Why the log: confirm runs are not Optuna trials, so the study holds no times
    for them, and a stopped run's folder is continued from another folder in a later sitting."""
    from narm_lightning.sweeping.confirm_step import CONFIRM_STEP_LINE
    from narm_lightning.sweeping.sweeper import SITTING_STARTS

    total, sittings, start, last = 0.0, 0, None, None

    def close() -> None:
        nonlocal total, sittings
        if start is not None and last is not None:
            total += (last - start).total_seconds()
            sittings += 1

    for line in console.splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue  # a traceback's or a third-party line
        when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
        if any(f"[HYDRA] {words}" in line for words in SITTING_STARTS):  # a new sitting
            close()
            start = None
        if start is None and f"[HYDRA] {CONFIRM_STEP_LINE}" in line:
            start = when
        last = when
    close()
    return total / 3600, sittings


def hosts_line(trials: list[Any]) -> str:
    """Where the trials trained (``host_cpu``, recorded by each run since 2026-12-06), with counts."""
    from collections import Counter

    from narm_lightning.sweeping.study import HOST_ATTR

    counts = Counter(str(t.user_attrs.get(HOST_ATTR, "not recorded")) for t in trials if t.datetime_start)
    return "; ".join(f"{host}: {n} trial{'s' * (n != 1)}" for host, n in counts.most_common())


def main() -> None:
    import optuna

    from narm_lightning.sweeping.confirm import candidates, stored, summarize, to_markdown
    from narm_lightning.sweeping.study import stale_trial_numbers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="hyper-test-ml-100k")
    parser.add_argument("--storage", default=None, help="default: sqlite:///optuna/<study>.db")
    parser.add_argument("--confirm-top", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=args.storage or f"sqlite:///optuna/{args.study}.db")
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    print(f"Study {args.study}: {len(trials)} trials\n")
    print("| # | " + " | ".join(names) + " | state | value | epochs | minutes |")
    print("|---|" + "---|" * (len(names) + 4))
    stale = stale_trial_numbers(trials)  # stopped or orphaned, run again as another trial: not counted
    for t in trials:
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60 if t.datetime_complete else None
        value = f"{t.value:.4f}" if t.value is not None else (
            f"{list(t.intermediate_values.values())[-1]:.4f} (last)" if t.intermediate_values else "")
        state = f"{t.state.name} (stopped; run again)" if t.number in stale else t.state.name
        print(f"| {t.number} | " + " | ".join(str(t.params.get(n, "")) for n in names)
              + f" | {state} | {value} | {len(t.intermediate_values)} | "
              + (f"{minutes:.1f}" if minutes is not None else "") + " |")
    done = [t for t in trials if t.state.is_finished() and t.number not in stale]
    hours = trial_hours(trials)
    if hours:
        print(f"\n{len(done)} finished in {hours:.2f} h of trial time (every attempt, stopped ones included): "
              f"{len(done) / hours:.2f} trials/hour. Trained on: {hosts_line(trials)}")
    points = grid_points(trials, stale)
    if points:
        n_done, pruned = points_done(points)
        print(f"\nGrid: {n_done} of {len(points)} points done ({n_done - pruned} complete, {pruned} pruned), "
              "best first:\n")
        print("\n".join(grid_lines(points, names)))
    results = stored(study)
    if results:
        chosen = candidates(study, args.confirm_top, True)
        seeds = sorted({seed for _, seed in results})
        print("\nConfirm step:\n")
        print(to_markdown(summarize(results, [c.label for c in chosen]), {c.label: c.params for c in chosen}, seeds))


if __name__ == "__main__":
    main()
