"""The sweep's own W&B run: a table of every trial and the Optuna plots, beside the trials' runs in one group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from narm_lightning.sweeping.confirm import CSV_FILE as CONFIRM_CSV
from narm_lightning.sweeping.report import CURVES_FILE, inline_plotlyjs
from narm_lightning.wandb_runs import finish_run, open_run


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of every row, in order of first appearance (pruned trials may lack some values)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def log_sweep_summary(
    study_name: str,
    trials_table_rows: Sequence[Mapping[str, Any]],
    html_plot_paths: Sequence[str | Path],
    wandb_cfg: Mapping[str, Any],
    sweep_dir: str | Path,
    summary: Mapping[str, Any] | None = None,
    curves: Sequence[tuple[int, int, float]] = (),
    objective_name: str = "objective",
    confirm_rows: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Log one finished ``sweep-summary`` run grouped with the trials (group = ``study_name``); returns its id.

    ``trials_table_rows``: one dict per trial (e.g. number, state, value, params...) -> the ``trials`` table.
    ``html_plot_paths``: Optuna plots written as HTML -> ``plots/<file stem>``. ``wandb_cfg``: the
    ``logger.wandb`` options (mode, project, entity, tags, dir); its ``name``/``group`` are per-trial and
    ignored here. ``summary``: extra summary values (best value, best params...). ``curves``: the
    trials' reported ``(number, step, value)`` -> one chart of every trial's curve; the complete trials'
    values -> one bar chart, so trials compare at a glance offline and online. ``confirm_rows``: the
    confirm step's table (``confirm.csv``) -> the ``confirm`` table.
    """
    import wandb

    options = {k: v for k, v in wandb_cfg.items() if k not in ("name", "group")}
    run = open_run(options, Path(sweep_dir), job_type="sweep-summary", name=f"{study_name}-summary",
                   group=study_name, tags=["sweep-summary"], config={"study_name": study_name})
    state = "failed"
    try:
        columns = table_columns(trials_table_rows)
        data = [[_cell(row.get(c)) for c in columns] for row in trials_table_rows]
        run.log({"trials": wandb.Table(columns=columns, data=data)})
        run.log(comparison_charts(trials_table_rows, curves, objective_name))
        if confirm_rows:
            columns = table_columns(confirm_rows)
            run.log({"confirm": wandb.Table(columns=columns,
                                            data=[[_cell(_number(r.get(c))) for c in columns] for r in confirm_rows])})
        for path in html_plot_paths:
            path = Path(path)
            html = inline_plotlyjs(path.read_text(encoding="utf-8"), path.parent)
            run.log({f"plots/{path.stem}": wandb.Html(html)})
        run.summary.update({"n_trials": len(trials_table_rows), **dict(summary or {})})
        state = "complete"
    finally:
        run_id = run.id
        finish_run(run, state)
    return run_id


def comparison_charts(rows: Sequence[Mapping[str, Any]], curves: Sequence[tuple[int, int, float]],
                      objective_name: str) -> dict[str, Any]:
    """``charts/curves`` (each trial's value per step) and ``charts/best_per_trial`` (complete trials)."""
    import wandb

    charts: dict[str, Any] = {}
    by_trial: dict[int, list[tuple[int, float]]] = {}
    for number, step, value in curves:
        by_trial.setdefault(int(number), []).append((int(step), float(value)))
    if by_trial:
        numbers = sorted(by_trial)
        charts["charts/curves"] = wandb.plot.line_series(
            xs=[[s for s, _ in by_trial[n]] for n in numbers], ys=[[v for _, v in by_trial[n]] for n in numbers],
            keys=[f"trial {n}" for n in numbers], title=f"{objective_name} per epoch, every trial", xname="epoch")
    complete = [(f"trial {row['number']}", float(row["value"])) for row in rows
                if str(row.get("state", "")).lower() == "complete" and row.get("value") not in (None, "")]
    if complete:
        table = wandb.Table(columns=["trial", objective_name], data=[list(c) for c in complete])
        charts["charts/best_per_trial"] = wandb.plot.bar(table, "trial", objective_name,
                                                         title=f"best {objective_name} per complete trial")
    return charts


def _read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file the sweeper wrote ([] when it wrote none)."""
    import csv

    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _number(value: Any) -> Any:
    """CSV cells are text: numbers become numbers again (the W&B table sorts and plots them)."""
    if isinstance(value, str):
        try:
            return int(value) if value.lstrip("-").isdigit() else float(value) if value else None
        except ValueError:
            return value
    return value


def _cell(value: Any) -> Any:
    """Table cells must be one type per column: scalars stay, anything else (lists, dicts) becomes text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


class SweepSummaryCallback(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/sweep.yaml): after the sweep, one W&B summary run.

    It reads what the sweeper wrote into the sweep folder (``trials.csv``, ``optimization_results.yaml``,
    the HTML plots), so the sweeper itself stays free of W&B; nothing is logged when ``logger`` has no
    ``wandb`` entry.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import yaml

        wandb_cfg = OmegaConf.select(config, "logger.wandb", default=None)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        results_file = sweep_dir / "optimization_results.yaml"
        if wandb_cfg is None or not results_file.exists():
            return
        results = yaml.safe_load(results_file.read_text(encoding="utf-8")) or {}
        rows = _read_csv(sweep_dir / "trials.csv")
        curves = [(int(r["number"]), int(r["step"]), float(r["value"])) for r in _read_csv(sweep_dir / CURVES_FILE)]
        summary = {k: results.get(k) for k in ("best_trial", "best_value", "direction")}
        summary.update({f"best_params.{k}": v for k, v in (results.get("best_params") or {}).items()})
        objective = OmegaConf.select(config, "hydra.sweeper.objective_name", default=None) or "objective"
        confirm_rows = _read_csv(sweep_dir / CONFIRM_CSV)
        log_sweep_summary(str(results.get("name")), rows, sorted(sweep_dir.glob("*.html")),
                          OmegaConf.to_container(wandb_cfg, resolve=True), sweep_dir, summary, curves,
                          str(objective), confirm_rows)
