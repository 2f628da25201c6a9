"""The sweep's own W&B run: the study's progress, every trial's curve and the trials table, beside the trials' runs
in one group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from narm_lightning.tracking.wandb_runs import finish_run, open_run

if TYPE_CHECKING:
    from narm_lightning.sweeping.report import StudyReport


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of every row, in order of first appearance (pruned trials may lack some values)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def log_sweep_summary(
    study_name: str,
    trials_table_rows: Sequence[Mapping[str, Any]],
    wandb_cfg: Mapping[str, Any],
    sweep_dir: str | Path,
    summary: Mapping[str, Any] | None = None,
    curves: Sequence[tuple[int, int, float]] = (),
    objective_name: str = "objective",
    confirm_rows: Sequence[Mapping[str, Any]] = (),
    direction: str = "maximize",
    params: Sequence[str] = (),
) -> str:
    """Log one finished ``sweep-summary`` run grouped with the trials (group = ``study_name``); returns its id.

    What a user reads, as W&B's own charts (no HTML: Optuna's plots inline 4.8 MB of plotly.js each, and they
    open offline from the sweep folder): one history row per trial, stepped by ``trial`` (its value, the best
    value so far, each numeric parameter), so the run's panels are the study's progress and each parameter
    against the trial; one row per epoch, stepped by ``epoch``, with each trial's reported value
    (``curve/trial-N``: every trial's valid curve in one panel section). The trials table and the confirm table
    go into the run's summary, not its history, so no panel charts a table's size.

    ``trials_table_rows``: one dict per trial (number, state, value, each param...); ``params``: which of its keys
    are the searched parameters. ``wandb_cfg``: the
    ``logger.wandb`` options; its ``name``/``group`` are per-trial and ignored here. ``curves``: the trials'
    reported ``(number, step, value)``.
    """
    import wandb

    options = {k: v for k, v in wandb_cfg.items() if k not in ("name", "group")}
    run = open_run(options, Path(sweep_dir), job_type="sweep-summary", name=f"{study_name}-summary",
                   group=study_name, tags=["sweep-summary"], config={"study_name": study_name})
    state = "failed"
    try:
        run.define_metric("trial")
        run.define_metric("trial/*", step_metric="trial")
        run.define_metric("epoch")
        run.define_metric("curve/*", step_metric="epoch")
        for row in trial_history(trials_table_rows, objective_name, direction, params):
            run.log(row)
        for row in curve_history(curves):
            run.log(row)
        columns = table_columns(trials_table_rows)
        run.summary["trials"] = wandb.Table(columns=columns,
                                            data=[[_cell(row.get(c)) for c in columns] for row in trials_table_rows])
        if confirm_rows:
            columns = table_columns(confirm_rows)
            run.summary["confirm"] = wandb.Table(
                columns=columns, data=[[_cell(_number(r.get(c))) for c in columns] for r in confirm_rows])
        run.summary.update({"n_trials": len(trials_table_rows), **dict(summary or {})})
        state = "complete"
    finally:
        run_id = run.id
        finish_run(run, state)
    return run_id


def trial_history(rows: Sequence[Mapping[str, Any]], objective_name: str, direction: str,
                  params: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per trial in number order: ``trial``, ``trial/<objective>`` (complete trials), ``trial/best so far``
    and ``trial/<param>`` for each numeric parameter (a categorical's option names cannot be charted)."""
    better = max if direction == "maximize" else min
    best: float | None = None
    out = []
    for row in sorted(rows, key=lambda r: int(_number(r["number"]))):
        entry: dict[str, Any] = {"trial": int(_number(row["number"]))}
        value = _number(row.get("value"))
        if str(row.get("state", "")).lower() == "complete" and isinstance(value, (int, float)):
            entry[f"trial/{objective_name}"] = value
            best = value if best is None else better(best, value)
        if best is not None:
            entry[f"trial/best {objective_name} so far"] = best
        for key in params:
            number = _number(row.get(key))
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                entry[f"trial/{key}"] = number
        out.append(entry)
    return out


def curve_history(curves: Sequence[tuple[int, int, float]]) -> list[dict[str, Any]]:
    """One row per epoch: ``epoch`` and ``curve/trial-N`` for every trial that reported a value at it."""
    by_step: dict[int, dict[str, Any]] = {}
    for number, step, value in curves:
        by_step.setdefault(int(step), {"epoch": int(step)})[f"curve/trial-{int(number)}"] = float(value)
    return [by_step[step] for step in sorted(by_step)]


def _number(value: Any) -> Any:
    """Numbers written as text (a categorical's option "128") become numbers (the W&B table sorts and plots them)."""
    if isinstance(value, str):
        try:
            return int(value) if value.lstrip("-").isdigit() else float(value) if value else None
        except ValueError:
            return value
    return value


def _cell(value: Any) -> Any:
    """Table cells must be one type per column: scalars stay, anything else (lists, dicts) becomes text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def log_study_report(report: StudyReport, config: DictConfig) -> None:
    """narm-sweep's report hook (``hydra.sweeper.report_hooks`` in conf/sweep.yaml): after the sweep, one W&B
    summary run made from the sweeper's report (the rows it wrote to trials.csv, curves.csv and confirm.csv), so
    the sweeper itself stays free of W&B; nothing is logged when ``logger`` has no ``wandb`` entry."""
    wandb_cfg = OmegaConf.select(config, "logger.wandb", default=None)
    if wandb_cfg is None:
        return
    results = report.summary
    summary = {k: results.get(k) for k in ("best_trial", "best_value", "direction")}
    summary.update({f"best_params.{k}": v for k, v in (results.get("best_params") or {}).items()})
    sweep_dir = report.sweep_dir
    log_sweep_summary(report.study_name, report.trials, OmegaConf.to_container(wandb_cfg, resolve=True), sweep_dir,
                      summary, report.curves, report.objective_name, report.confirm, report.direction, report.params)
    offline = sorted((sweep_dir / "wandb").glob("offline-run-*"))
    if offline:
        # wandb leet lists runs by folder (offline-run-<time>-<run id>): our ids start with the run's name
        print(f"W&B: the study's {len(offline)} offline runs are in {sweep_dir / 'wandb'}: browse them with "
              f"`wandb leet {sweep_dir / 'wandb'}` (f filters by name, e.g. trial-0), upload them with "
              f"`wandb sync {sweep_dir / 'wandb'}/offline-run-*`")
