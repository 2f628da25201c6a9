"""The two pictures of a persistent sweep study that issue 20's README section shows, as PNG files:

* ``<out>-history.png``: every trial's objective in trial order (complete: dots; pruned: crosses at the last
  value they reported), the best so far as a step line;
* ``<out>-confirm.png`` (once the confirm step has results): one panel per metric, each config's seeds as
  dots and its mean with the 95% Student-t interval (the confirm table's numbers), and a reference line (RecBole's
  own default, read from ``--reference``).

    python -m bench.study.figures --study hyper-test-ml-100k --storage sqlite:///... --out DIR/NAME
        [--reference bench/studies-summary/recbole-default-ml-100k.json] [--metrics mrr@10 ndcg@10 recall@10]

Read-only on the storage. Optuna's own plots are HTML (plotly; the sweep writes them) or matplotlib drafts that
cannot mark pruned trials; these are drawn with matplotlib directly (``pip install -e '.[figures]'``).
Exit status 2 with one line when the study, the reference file or matplotlib is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

METRICS = ("mrr@10", "ndcg@10", "recall@10")


class FigureError(Exception):
    """Input the figures cannot be drawn from: the message says which and what was expected."""


def load_reference(path: Path | None) -> dict[str, Any]:
    """``{"label": str, "metrics": {name: value}}`` from a JSON file (None: no reference line)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FigureError(f"--reference {path}: cannot read it as JSON ({error}); expected "
                          '{"label": "...", "metrics": {"mrr@10": 0.04, ...}}') from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise FigureError(f"--reference {path}: expected a \"metrics\" mapping of metric name to number")
    return {"label": str(data.get("label", "reference")), "source": str(data.get("source", "")),
            "metrics": {str(k): float(v) for k, v in metrics.items()}}


def open_study(name: str, storage: str) -> Any:
    """The study, read-only in effect: a missing SQLite file is refused (sqlite would create an empty one)."""
    import optuna

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise FigureError(f"--storage {storage}: no such database file (sqlite would create an empty one)")
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise FigureError(f"no study {name!r} in {storage}") from None


def history_points(study: Any) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
    """(complete, pruned at their last report, best so far) as (trial number, value) lists."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from narm_lightning.sweeping.study import stale_trial_numbers

    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    complete = [(t.number, float(t.value)) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, float(list(t.intermediate_values.values())[-1])) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values and t.number not in stale]
    better = max if study.direction == StudyDirection.MAXIMIZE else min
    best: list[tuple[int, float]] = []
    for number, value in complete:
        best.append((number, value if not best else better(best[-1][1], value)))
    return complete, pruned, best


def plot_history(study: Any, path: Path, objective: str) -> None:
    import matplotlib.pyplot as plt

    complete, pruned, best = history_points(study)
    if not complete:
        raise FigureError(f"study {study.study_name!r} has no complete trial yet: nothing to draw")
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.scatter(*zip(*complete), s=22, color="#1f77b4", label=f"complete ({len(complete)})", zorder=3)
    if pruned:
        ax.scatter(*zip(*pruned), s=26, marker="x", color="#d62728", label=f"pruned ({len(pruned)}), last value",
                   zorder=3)
    end = max(n for n, _ in complete + pruned) + 0.5  # a post-step draws nothing after its last point: carry it on
    ax.step(*zip(*best, (end, best[-1][1])), where="post", color="#ff7f0e", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{study.study_name}: optimization history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confirm(study: Any, path: Path, metrics: list[str], top: int, reference: dict[str, Any]) -> bool:
    """The confirm panel figure; False (nothing written) while the confirm step has no results."""
    import matplotlib.pyplot as plt

    from narm_lightning.sweeping.confirm import DEFAULT_LABEL, candidates, stored, summarize

    results = stored(study)
    ok = {key: value for key, value in results.items() if "metrics" in value}
    if not ok:
        return False
    labels = [c.label for c in candidates(study, top, True) if any(label == c.label for label, _ in ok)]
    rows = {(r.label, r.metric): r for r in summarize(ok, labels, metrics)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.6), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for x, label in enumerate(labels):
            seeds = [value["metrics"][metric] for (lab, _), value in sorted(ok.items())
                     if lab == label and metric in value["metrics"]]
            ax.scatter([x] * len(seeds), seeds, s=14, color="#7f7f7f", zorder=3)
            row = rows.get((label, metric))
            if row is not None:
                color = "#2ca02c" if label == DEFAULT_LABEL else "#1f77b4"
                low, high = row.ci_low, row.ci_high
                err = [[row.mean - low], [high - row.mean]] if not math.isnan(low) else None
                ax.errorbar([x + 0.15], [row.mean], yerr=err, fmt="o", color=color, capsize=4, zorder=4)
        if metric in reference.get("metrics", {}):
            ax.axhline(reference["metrics"][metric], color="#d62728", linestyle="--", linewidth=1,
                       label=reference["label"])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)  # one slot a config: a lone config's mean stays beside its seeds
        ax.set_title(f"test {metric}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{study.study_name}: confirm step (seeds as dots, mean with 95% CI)", fontsize=10)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:  # one legend under the panels: inside one it would hide a config's interval
        fig.legend(handles, names, loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True, help="the study's storage URL (sqlite:///..., a journal file)")
    parser.add_argument("--out", type=Path, required=True, help="path prefix: <out>-history.png, <out>-confirm.png")
    parser.add_argument("--reference", type=Path, default=None, help="JSON with the confirm figure's reference line")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), help="confirm panels (the results' names)")
    parser.add_argument("--confirm-top", type=int, default=3, help="the sweep's hydra.sweeper.confirm_top")
    args = parser.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        print("study_figures: matplotlib is not installed; pip install -e '.[figures]'", file=sys.stderr)
        return 2
    matplotlib.use("Agg")  # files only, no display
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        reference = load_reference(args.reference)
        study = open_study(args.study, args.storage)
        objective = (study.metric_names or ["objective"])[0]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        plot_history(study, Path(f"{args.out}-history.png"), objective)
        print(f"wrote {args.out}-history.png")
        if plot_confirm(study, Path(f"{args.out}-confirm.png"), args.metrics, args.confirm_top, reference):
            print(f"wrote {args.out}-confirm.png")
        else:
            print("no confirm results yet: no confirm figure")
    except FigureError as error:
        print(f"study_figures: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
