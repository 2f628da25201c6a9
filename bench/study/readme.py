"""Issue 20's README section, written from the study itself: where the hyper.test study stands (or what it
found), every grid point, the confirm table beside RecBole's own default, the pictures and how to rerun it.

    python -m bench.study.readme --storage sqlite:///bench/studies/hyper-test-ml-100k/study.db [--readme README.md]

Replaces what lies between the two marker lines in the README (``MARK_START`` / ``MARK_END``), so each
``make study-hyper-test-save`` brings the section up to date and no figure in it is typed by hand. A README
without the markers, a missing study or reference is one line on stderr and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import Any

MARK_START = "<!-- hyper-test study: written by `make study-hyper-test-save` (bench/study/readme.py); edit that -->"
MARK_END = "<!-- end of the hyper-test study section -->"
GOAL = 1.20  # issue 20: the best config's test MRR@10 at least 20% above RecBole's default
METRICS = ("mrr@10", "ndcg@10", "recall@10")


def section(study: Any, reference: dict[str, Any], figures: str, top: int, now: dt.datetime,
            n_seeds: int = 3, console: str | None = None) -> str:
    """The README section's Markdown (between the markers) for ``study``; ``top`` and ``n_seeds`` are the sweep's
    confirm_top and confirm_seeds (the study records neither, and the confirm step's size is said before its
    first result); ``console`` the study's console log, where the confirm step's time is read."""

    from bench.study import status
    from narm_lightning.sweeping.confirm import DEFAULT_LABEL, candidates, stored, summarize, to_markdown
    from narm_lightning.sweeping.study import stale_trial_numbers

    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    points = status.grid_points(trials, stale)
    n_done, pruned = status.points_done(points)
    fixed = {n: points[0][0][n] for n in names if len({str(p[n]) for p, _ in points}) == 1} if points else {}
    shown = [n for n in names if n not in fixed]
    chosen = candidates(study, top, True)
    results = stored(study)
    seeds = sorted({seed for _, seed in results})
    n_runs = len(chosen) * max(n_seeds, len(seeds))
    confirm_done = sum((c.label, s) in results for c in chosen for s in seeds)
    finished = n_done == len(points) and points
    hours = status.trial_hours(trials)
    lines = [
        "## What tuning buys: RecBole's NARM `hyper.test` on ml-100k, run to the end",
        "",
        (f"**Status, {now:%Y-%m-%d %H:%M} UTC: " + (
            "complete.**" if finished and confirm_done and confirm_done == n_runs
            else f"in progress** ({n_done} of {len(points)} grid points done, "
                 + (f"confirm step {confirm_done} of {n_runs} runs done" if seeds or finished else
                    "confirm step not started") + "; `make study-hyper-test` continues it).")),
        "",
        "```bash",
        "make study-hyper-test         # the study below; rerun to continue it (a stopped trial goes on from its "
        "last epoch)",
        "make study-hyper-test-status  # every trial, the grid, the confirm table",
        "make study-hyper-test-save    # its snapshot (bench/studies-summary/), pictures and this section",
        "```",
        "",
        "`make study-hyper-test` is `python sweep.py -m --params-file=bench/hyper.test` (RecBole's NARM `hyper.test`, "
        f"{len(points)} points: " + " x ".join(f"{n} {len({str(p[n]) for p, _ in points})}" for n in names)
        + ") with RecBole's protocol on ml-100k, fp32 (`trainer.precision=32-true`: the sittings ran on hosts with "
        "and without bf16 units), Optuna's median pruner (5 startup trials, 10 warm-up epochs: a trial whose valid "
        "MRR@10 is below the median of the earlier trials at the same epoch stops there; no trial is judged before "
        "epoch 10, where the slow learning rates are still climbing) and then the confirm step: the top "
        f"{top} configs and the default one, retrained with seeds {', '.join(map(str, seeds or [2020, 2021, 2022]))} "
        "to early stopping.",
        "",
        f"Time: {len(trials)} trial attempts, {hours:.1f} h of trial time ("
        + (f"{(n_done / hours):.2f} finished points an hour" if hours else "none yet")
        + "; the early sittings' pauses for timings are inside it)"
        + _confirm_time(console, hours, seeds, confirm_done == n_runs)
        + ". The CPU each trial trained on, recorded since "
        "2026-12-06 (each earlier sitting's `bench/HISTORY.md` entry names its CPU): " + status.hosts_line(trials)
        + ".",
        "",
        f"Every grid point, best valid MRR@10 first ({', '.join(f'{k} {v}' for k, v in fixed.items())} throughout; "
        f"pruned: the value where it stopped; {n_done} done, {pruned} of them pruned):",
        "",
        *_drop_columns(_objective_header(status.grid_lines(points, names), study), names, shown),
        "",
        f"What matters{'' if finished else ' so far'}, each value's best / median point (points done; a pruned "
        "point at the value where it stopped, which it might have passed): "
        + "; ".join(f"{n} " + ", ".join(f"{v} {b}" for v, b in _best_by_value(points, n, status.point_value))
                    for n in shown) + "." + _deciding(points, shown, status.point_value),
        "",
    ]
    if seeds:
        rows = summarize(results, [c.label for c in chosen], METRICS)
        lines += ["Confirm step, test metrics:", "", to_markdown(rows, {c.label: c.params for c in chosen}, seeds)]
        source = f" ({reference['source']})" if reference.get("source") else ""
        lines += [f"{reference['label']}: " + ", ".join(f"{m} {v:.4f}" for m, v in reference["metrics"].items())
                  + f"{source}.", ""]
        best = next((c.label for c in chosen if c.label != DEFAULT_LABEL), None)
        mrr = next((r for r in rows if r.label == best and r.metric == "mrr@10"), None)
        if mrr is not None and confirm_done == n_runs:
            target = GOAL * reference["metrics"]["mrr@10"]
            p = "" if mrr.p_value is None else f", paired p = {mrr.p_value:.3f} against our default config"
            lines += [f"Goal (test MRR@10 ≥ {target:.4f}, 20% above RecBole's default, not noise): {best} (the grid's "
                      f"best on valid) reaches {mrr.mean:.4f} ± {mrr.std:.4f} "
                      f"({mrr.mean / reference['metrics']['mrr@10'] - 1:+.1%} against RecBole's){p}: "
                      + ("**met**." if _meets(mrr, target) else "**not met**."), ""]
            others = [r for r in rows if r.metric == "mrr@10" and r.label not in (best, DEFAULT_LABEL)]
            if others:
                # the goal judges the config validation chose; picking the winner by its test mean would tune on test
                lines += ["The other confirmed configs (shown, not chosen by their test figures): "
                          + "; ".join(f"{r.label} {r.mean:.4f} ± {r.std:.4f}"
                                      + ("" if r.p_value is None else f", p = {r.p_value:.3f}")
                                      + (" (would meet it)" if _meets(r, target) else "") for r in others) + ".", ""]
            spread = [r.std for r in rows if r.metric == "mrr@10" and r.n > 1]
            gaps = [r.diff for r in rows if r.metric == "mrr@10" and r.diff is not None]
            if spread and gaps:
                lines += [f"Seeds against configs (test MRR@10): the seed std of a config is {min(spread):.4f} to "
                          f"{max(spread):.4f}; the confirmed configs differ from the default by {min(gaps):+.4f} to "
                          f"{max(gaps):+.4f}.", ""]
    else:
        lines += ["RecBole 1.2.1's own default for the confirm table: "
                  + ", ".join(f"{m} {v:.4f}" for m, v in reference["metrics"].items()) + ".", ""]
    lines += [f"![optimization history]({figures}-history.png)"]
    if Path(f"{figures}-confirm.png").exists():
        lines += ["", f"![confirm step]({figures}-confirm.png)"]
    lines += ["", "The whole study in W&B (offline, one group): `wandb leet bench/studies/hyper-test-ml-100k/sweep`; "
              "in optuna-dashboard: `optuna-dashboard sqlite:///bench/studies/hyper-test-ml-100k/study.db` or the "
              "committed journal (docs/sweeps.md)."]
    return "\n".join(lines)


def _confirm_time(console: str | None, grid_hours: float, seeds: list[int], done: bool) -> str:
    """The confirm step's time and the whole study's, from the console log (the study holds no confirm times)."""
    from bench.study import status

    if not seeds:
        return ""
    if console is None:
        return "; the confirm step's time is in its console log, not given here (`--console`)"
    hours, sittings = status.confirm_hours(console)
    return (f"; the confirm step {'' if done else 'so far '}{hours:.1f} h in {sittings} "
            f"sitting{'s' * (sittings != 1)} (from the study's console log); the whole study "
            f"{grid_hours + hours:.1f} h of training")


def _meets(row: Any, target: float) -> bool:
    """The goal: a mean at or above ``target`` and a paired test against the default that says it is not noise."""
    return row.mean >= target and row.p_value is not None and row.p_value < 0.05


def _deciding(points: list[tuple[dict[str, Any], Any]], names: list[str], value: Any) -> str:
    """Which parameter moves the grid most: the widest range between its values' medians (a median over every
    partner, so a value that works only beside the right ones does not count as deciding)."""
    ranges = {}
    for name in names:
        medians = [statistics.median(f) for f in _figures_by_value(points, name, value).values() if f]
        if len(medians) > 1:
            ranges[name] = max(medians) - min(medians)
    if len(ranges) < 2:
        return ""
    order = sorted(ranges, key=ranges.get, reverse=True)
    if ranges[order[0]] < 2 * ranges[order[1]]:  # no clear winner: say the spans, name none
        return (" No one parameter decides: its values' medians span " + ", ".join(
            f"{n} {ranges[n]:.4f}" for n in order) + ".")
    return (f" {order[0]} decides: its values' medians span {ranges[order[0]]:.4f} ("
            + ", ".join(f"{n} {ranges[n]:.4f}" for n in order[1:]) + ").")


def _figures_by_value(points: list[tuple[dict[str, Any], Any]], name: str, value: Any) -> dict[str, list[float]]:
    """Each value of ``name`` (grid order) with the figures of its points done."""
    return {choice: [value(t) for p, t in points if str(p[name]) == choice and value(t) is not None]
            for choice in dict.fromkeys(str(p[name]) for p, _ in points)}


def _best_by_value(points: list[tuple[dict[str, Any], Any]], name: str, value: Any) -> list[tuple[str, str]]:
    """For each value of ``name``: its best and median point's figure and how many of its points are done (the best
    alone hides a value that works only with the right partners; the median shows it)."""
    return [(choice, f"{max(figures):.4f} / {statistics.median(figures):.4f} ({len(figures)})" if figures else "- (0)")
            for choice, figures in _figures_by_value(points, name, value).items()]


def _objective_header(lines: list[str], study: Any) -> list[str]:
    """The grid table with its value column named after the study's objective (``valid MRR@10``)."""
    name = (study.metric_names or ["value"])[0]
    return [lines[0].replace("| state | value |", f"| state | {name} |"), *lines[1:]] if lines else lines


def _drop_columns(lines: list[str], names: list[str], shown: list[str]) -> list[str]:
    """The grid table without the columns of parameters that never vary."""
    keep = [i for i, n in enumerate(names) if n in shown]
    out = []
    for line in lines:
        cells = line.strip("|").split("|")
        out.append("|" + "|".join(c for i, c in enumerate(cells) if i >= len(names) or i in keep) + "|")
    return out


def replace_section(readme: str, body: str) -> str:
    """``readme`` with what lies between the markers replaced by ``body``."""
    from bench.study.figures import FigureError

    if readme.count(MARK_START) != 1 or readme.count(MARK_END) != 1 or readme.index(MARK_START) > readme.index(
            MARK_END):
        raise FigureError(f"the README needs the lines {MARK_START!r} and {MARK_END!r}, once each, in that order")
    head, rest = readme.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    return f"{head}{MARK_START}\n{body}\n{MARK_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    import optuna

    from bench.study.figures import FigureError, load_reference, open_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="hyper-test-ml-100k")
    parser.add_argument("--storage", required=True, help="the study's storage URL (sqlite:///..., a journal file)")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--reference", type=Path, default=Path("bench/studies-summary/recbole-default-ml-100k.json"))
    parser.add_argument("--figures", default="bench/studies-summary/hyper-test-ml-100k",
                        help="the pictures' path prefix (-history.png, -confirm.png), as the README links them")
    parser.add_argument("--confirm-top", type=int, default=3, help="the sweep's hydra.sweeper.confirm_top")
    parser.add_argument("--confirm-seeds", type=int, default=3, help="the sweep's hydra.sweeper.confirm_seeds")
    parser.add_argument("--console", type=Path, default=None,
                        help="the study's console log (make study-hyper-test appends each sitting): the confirm time")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not args.readme.is_file():
            raise FigureError(f"--readme {args.readme}: no such file; expected the project's README.md")
        reference = load_reference(args.reference)
        if "mrr@10" not in reference["metrics"]:
            raise FigureError(f"--reference {args.reference}: no mrr@10 among its metrics (the goal is set on it)")
        if args.console is not None and not args.console.is_file():
            raise FigureError(f"--console {args.console}: no such file; expected the study's console log")
        console = args.console.read_text(encoding="utf-8", errors="replace") if args.console else None
        body = section(open_study(args.study, args.storage), reference, args.figures, args.confirm_top,
                       dt.datetime.now(dt.timezone.utc), args.confirm_seeds, console)
        text = replace_section(args.readme.read_text(encoding="utf-8"), body)
    except FigureError as error:
        print(f"study_readme: {error}", file=sys.stderr)
        return 2
    tmp = args.readme.with_name(args.readme.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.readme)
    print(f"{args.readme}: the hyper-test study section brought up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
