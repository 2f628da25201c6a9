"""What a finished sweep leaves behind: results YAML, trials CSV, Optuna HTML plots, a console summary.

``write_results`` is the single "sweep finished" step: it reads the study once into a ``StudyReport``, writes the
files from it and returns it; the sweeper hands the same report (the confirm table added) to each of its
``report_hooks`` (narm-sweep: the W&B summary run), so nothing re-reads the files just written. Every file is
written atomically (temp file + ``os.replace``) because several workers may write the same sweep dir.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from narm_lightning.io import write_text_atomic
from narm_lightning.sweeping.study import (
    ERROR_ATTR,
    HOST_ATTR,
    REPORT_ATTR,
    RUN_DIR_ATTR,
    WANDB_RUN_ATTR,
    count_trials,
    stale_trial_numbers,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"
CURVES_FILE = "curves.csv"  # every intermediate value a trial reported: number, step, value
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def _scalar(value: Any) -> Any:
    """YAML-safe scalar (numpy numbers and the like become plain Python)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def summary(study: Any, target: int | None = None) -> dict[str, Any]:
    """The content of ``optimization_results.yaml``."""
    counts = count_trials(study)
    best = _best_trial(study)
    return {
        "name": study.study_name,
        "direction": study.direction.name.lower(),
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else float(best.value),
        "best_params": {} if best is None else {k: _scalar(v) for k, v in best.params.items()},
        "n_trials": {
            "target": target,
            "finished": counts.finished,
            "complete": counts.complete,
            "pruned": counts.pruned,
            "failed": counts.failed,
            "stale": counts.stale,
            "running": counts.running,
        },
    }


def _best_trial(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


@dataclass
class StudyReport:
    """A finished sweep's results, read from the study once: the files are written from it and each report hook
    receives it. Rows are typed (None where trials.csv has an empty cell)."""

    study_name: str
    direction: str  # "maximize" or "minimize"
    objective_name: str  # what the plots and tables call the objective
    sweep_dir: Path
    summary: dict[str, Any]  # optimization_results.yaml
    params: list[str]  # the searched parameters: columns of ``trials`` after number and state
    trials: list[dict[str, Any]]  # trials.csv, one dict a trial, its columns in order
    curves: list[tuple[int, int, float]]  # curves.csv: (trial number, step, value)
    confirm: list[dict[str, Any]] = field(default_factory=list)  # confirm.csv, when the confirm step ran


def trial_rows(study: Any) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The searched parameters, the columns, and one row per trial: number, state, one column per param, value,
    what the task reported, duration_s, its run folder, W&B run and CPU (when the app returns them), error."""
    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    names: list[str] = []
    reported: list[str] = []  # what tasks reported beside the objective (narm: the test metrics)
    for trial in trials:
        names.extend(name for name in trial.params if name not in names)
        reported.extend(name for name in trial.user_attrs.get(REPORT_ATTR) or {} if name not in reported)
    columns = ["number", "state", *names, "value", *reported, "duration_s", "folder", "wandb_run_id", "host_cpu",
               "error"]
    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        # a trial re-run after a stop used to inherit its predecessor's error: shown only on a failed trial
        error = attrs.get(ERROR_ATTR, "") if trial.state.name == "FAIL" else ""
        if trial.number in stale and not error:
            error = "stale: its worker stopped sending heartbeats; re-run as a new trial"
        rows.append(dict(zip(columns, [
            trial.number,
            trial.state.name,
            *[_scalar(trial.params[name]) if name in trial.params else None for name in names],
            trial.value,
            *[(attrs.get(REPORT_ATTR) or {}).get(name) for name in reported],
            None if duration is None else round(duration, 3),
            attrs.get(RUN_DIR_ATTR),
            attrs.get(WANDB_RUN_ATTR),
            attrs.get(HOST_ATTR),  # where it trained, beside its duration
            error or None,
        ], strict=True)))
    return names, columns, rows


def as_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """``rows`` as CSV text: a header of ``columns`` (default: the first row's keys), None as an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = columns if columns is not None else list(rows[0]) if rows else []
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue()


def trials_csv(study: Any) -> str:
    """trials.csv of ``study`` (``trial_rows``)."""
    _, columns, rows = trial_rows(study)
    return _trials_text(columns, rows)


def _trials_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """trials.csv's text: durations with 3 decimals."""
    shown = [{**r, "duration_s": None if r["duration_s"] is None else f"{r['duration_s']:.3f}"} for r in rows]
    return as_csv(shown, columns)


def curve_points(study: Any) -> list[tuple[int, int, float]]:
    """The learning curves the trials reported (``trial.report(value, step)``): (number, step, value)."""
    return [(trial.number, step, value) for trial in study.get_trials(deepcopy=False)
            for step, value in sorted(trial.intermediate_values.items())]


def curves_csv(points: list[tuple[int, int, float]]) -> str:
    """curves.csv: one row a reported value."""
    return as_csv([{"number": n, "step": s, "value": v} for n, s, v in points], ["number", "step", "value"])


PLOTLY_JS = "plotly.min.js"  # shipped once beside the plots: they open offline, without a CDN
MIN_IMPORTANCE_TRIALS = 5  # fewer complete trials rank parameters by noise


def _importance_problem(study: Any) -> str | None:
    """Why parameter importances would mean nothing yet (None when they can be computed meaningfully)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [name for name in {n for t in complete for n in t.params}
               if len({repr(t.params.get(name)) for t in complete}) > 1]
    if len(complete) < MIN_IMPORTANCE_TRIALS or len(varying) < 2:
        return (f"importances need at least {MIN_IMPORTANCE_TRIALS} complete trials and 2 parameters that vary "
                f"(have {len(complete)} and {len(varying)})")
    return None


def disk_use(folder: Path) -> str:
    """The size of everything under ``folder`` (checkpoints, W&B runs, plots), e.g. ``41.2 MB``."""
    size = float(sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()))
    if size < 1000:
        return f"{size:.0f} B"
    units = ["KB", "MB", "GB", "TB"]
    size /= 1000
    while size >= 1000 and len(units) > 1:
        size /= 1000
        units.pop(0)
    return f"{size:.1f} {units[0]}"


def write_plots(study: Any, sweep_dir: Path) -> list[str]:
    """Optuna's HTML plots, with plotly.js beside them (offline); a plot that would mean nothing is skipped
    with one log line saying why."""
    import optuna
    import optuna.visualization as vis
    from plotly.offline import get_plotlyjs

    written: list[str] = []
    target = {"target_name": study.metric_names[0]} if study.metric_names else {}
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        log.info("Skipped the plots: no trial completed.")
        return written
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the axis says what it is
    for name in PLOTS:
        problem = _importance_problem(study) if name == "param_importances" else None
        if problem:
            log.info("Skipped %s.html: %s.", name, problem)
            continue
        try:
            figure = getattr(vis, f"plot_{name}")(study, **target)
            if name == "parallel_coordinate":
                recolor_lines(figure)
            html = figure.to_html(include_plotlyjs="directory", full_html=True)
        except Exception as exc:  # noqa: BLE001 - Optuna raises various types for studies it cannot plot
            log.info("Skipped %s.html: %s", name, exc)
            continue
        write_text_atomic(sweep_dir / f"{name}.html", html)
        written.append(name)
    if written and not (sweep_dir / PLOTLY_JS).is_file():
        write_text_atomic(sweep_dir / PLOTLY_JS, get_plotlyjs())
    return written


def recolor_lines(figure: Any, scale: str = "Viridis") -> None:
    """Optuna colours each trial's line from plotly's "Blues", whose low end is white: the worst trial is
    drawn white on white. Each line keeps its place on the scale, read back from its colour, on ``scale``."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    steps = [i / 255 for i in range(256)]
    blues = [unlabel_rgb(c) for c in sample_colorscale("Blues", steps)]
    for trace in figure.data:
        color = getattr(getattr(trace, "line", None), "color", None)
        if isinstance(color, str) and color.startswith("rgb"):
            rgb = unlabel_rgb(color)
            t = min(steps, key=lambda s: sum((a - b) ** 2 for a, b in zip(blues[round(s * 255)], rgb)))
            trace.line.color = sample_colorscale(scale, [t])[0]
        elif getattr(getattr(trace, "marker", None), "colorscale", None):  # the colour bar
            trace.marker.colorscale = scale


def write_results(
    study: Any, sweep_dir: str | os.PathLike[str], target: int | None = None, plots: bool = True,
    objective_name: str | None = None,
) -> StudyReport:
    """The "sweep finished" step: results YAML, trials CSV, curves, plots, and the best trial on the console;
    returns the report they were written from."""
    sweep_dir = Path(sweep_dir)
    results = summary(study, target)
    params, columns, rows = trial_rows(study)
    done = StudyReport(study.study_name, results["direction"], objective_name or "objective", sweep_dir, results,
                       params, rows, curve_points(study))
    write_text_atomic(sweep_dir / RESULTS_FILE, yaml.safe_dump(results, sort_keys=False))
    write_text_atomic(sweep_dir / TRIALS_FILE, _trials_text(columns, rows))
    write_text_atomic(sweep_dir / CURVES_FILE, curves_csv(done.curves))
    if plots:
        write_plots(study, sweep_dir)
    n = results["n_trials"]
    log.info(
        "Study '%s': %d finished (%d complete, %d pruned, %d failed). Results in %s (%s on disk)",
        results["name"],
        n["finished"],
        n["complete"],
        n["pruned"],
        n["failed"],
        sweep_dir,
        disk_use(sweep_dir),
    )
    if results["best_trial"] is None:
        log.info("Best trial: none (no trial completed).")
    else:
        # as each trial's line gives it (4 significant digits, key=value); results.json keeps the full value
        params = " ".join(f"{k}={v}" for k, v in results["best_params"].items())
        log.info("Best trial: #%d value %.4g (%s)", results["best_trial"], results["best_value"], params)
    return done
