"""``train(cfg)``: the only place that maps the config to objects; build, fit, test the best checkpoint."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CPUAccelerator

from narm_lightning.cli.entry import hand_signals_to_lightning
from narm_lightning.config.validation import parse_metric_name
from narm_lightning.data.candidates import FILE_NAME as CANDIDATES_FILE
from narm_lightning.data.candidates import save as save_candidates
from narm_lightning.data.card import protocol_card
from narm_lightning.data.datamodule import SequentialDataModule
from narm_lightning.data.protocol import SequentialData
from narm_lightning.io import write_json_atomic, write_text_atomic
from narm_lightning.model.module import NARMModule, best_epoch
from narm_lightning.tracking.loggers import finish_loggers, log_results, wandb_run_id
from narm_lightning.tracking.wandb_runs import state_of
from narm_lightning.training.builders import (
    RunCallbacks,
    build_callbacks,
    build_datamodule,
    build_module,
    build_run_loggers,
    build_trainer,
    check_against_data,
    eval_candidates,
    load_data,
    load_initial_weights,
)
from narm_lightning.training.checkpointing import (
    RunState,
    check_resume_data,
)
from narm_lightning.training.epoch_log import EpochLog
from narm_lightning.training.hostcheck import warn_host_once
from narm_lightning.training.interrupts import stopped_by_signals
from narm_lightning.training.plan import RunPlan, plan_run
from narm_lightning.training.results import describe_run, format_results, peak_rss_mib
from narm_lightning.training.runlock import release_run_dirs

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What a caller learns of a run however it ends (a sweep records it on the trial: failed and pruned too)."""

    wandb_run_id: str | None = None  # the run's W&B run, once it was opened


def train(cfg: DictConfig, output_dir: str | Path | None = None, record: RunRecord | None = None) -> dict[str, Any]:
    """Train NARM as ``cfg`` says; write ``results.json`` and the best checkpoint into the run folder.

    Returns the results dict; ``best_valid_score`` is the sweep objective. The W&B run is finished whatever
    happens (tagged complete, pruned on ``optuna.TrialPruned``, failed otherwise), so the next run in this
    process starts clean; ``record``, if given, is filled in before it is.
    """
    loggers: list[pl.loggers.Logger] = []
    record = record if record is not None else RunRecord()
    state = "complete"
    try:
        results = _train(cfg, output_dir, loggers)
    except BaseException as exc:
        state = state_of(exc)
        raise
    finally:
        record.wandb_run_id = wandb_run_id(loggers)  # read before the run is finished
        finish_loggers(loggers, state)
        release_run_dirs()  # after the W&B run's last write; a sweep's next trial in this process writes another folder
    return results


def _train(cfg: DictConfig, output_dir: str | Path | None, loggers: list[pl.loggers.Logger]) -> dict[str, Any]:
    plan = plan_run(cfg, output_dir)
    cfg = plan.cfg
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    data, fingerprint = read_data(plan)
    candidates = eval_candidates(cfg, data, fingerprint)
    card = protocol_card(cfg, data, fingerprint, validating=len(data.valid) > 0, candidates=candidates)
    module = build_module(cfg, data.n_items, [str(t) for t in data.item_tokens], data.train.target,
                          torch.cat([data.train.target, data.valid.target, data.test.target]))
    module.protocol = card  # into every checkpoint
    if cfg.init_from:
        load_initial_weights(module, cfg.init_from)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # its own stream, saved in checkpoints for exact resume
    datamodule = build_datamodule(cfg, data, shuffle, candidates)
    check_against_data(cfg, data)
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("%s", describe_run(cfg, data.stats, n_params))
    callbacks = build_callbacks(plan, validating=len(data.valid) > 0,
                                state=RunState(shuffle, {"sha256": fingerprint, "source": data.source}))
    loggers.extend(build_run_loggers(plan, data.stats, n_params, callbacks, card))
    if plan.resume_ckpt is None and plan.lead:
        write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if candidates:  # the exact candidates every figure of this run was scored on, reusable elsewhere
            save_candidates(plan.run_dir / CANDIDATES_FILE, candidates,
                            {"examples_sha256": fingerprint, "seed": int(cfg.data.eval_candidates_seed),
                             "source": cfg.data.get("eval_candidates")})
    trainer = build_trainer(cfg, callbacks.all(), loggers, plan.run_dir, validating=callbacks.best is not None)
    if cfg.epochs > 0 and isinstance(trainer.accelerator, CPUAccelerator) and plan.lead:
        warn_host_once()
    hand_signals_to_lightning()
    started = time.perf_counter()
    best_path = fit(trainer, module, datamodule, plan, callbacks)
    fit_seconds = time.perf_counter() - started
    with stopped_by_signals(trainer, plan.run_dir):
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path, verbose=False, weights_only=True)
    if cfg.epochs == 0:  # the init_from weights as the run's checkpoint (Lightning saves only a model it ran)
        best_path = str(plan.run_dir / "checkpoints" / "best.ckpt")
        trainer.save_checkpoint(best_path)
    results = collect_results(plan, trainer, module, callbacks, data.stats, n_params, fit_seconds, best_path)
    results["protocol"] = card
    if trainer.is_global_zero:  # identical on every rank (metric states are summed across ranks)
        report_results(plan, results, loggers)
    return results


def read_data(plan: RunPlan) -> tuple[SequentialData, str]:
    """The dataset and its fingerprint; a resumed run must see the examples it was trained on."""
    data = load_data(plan.cfg)
    fingerprint = data.fingerprint()
    if plan.resume_ckpt is not None and plan.resumed_state is not None:
        check_resume_data(plan.resumed_state, fingerprint, data.source, plan.resume_ckpt)
    return data, fingerprint




def fit(trainer: pl.Trainer, module: NARMModule, datamodule: SequentialDataModule, plan: RunPlan,
        callbacks: RunCallbacks) -> str | None:
    """Train (or, with ``epochs=0``, only validate the initial weights); the checkpoint to test, if any."""
    with stopped_by_signals(trainer, plan.run_dir):
        if plan.cfg.epochs == 0:
            if callbacks.best is not None:
                trainer.validate(module, datamodule=datamodule, verbose=False)
            return None
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.resume_ckpt, weights_only=True)
    return callbacks.best_path()


def collect_results(plan: RunPlan, trainer: pl.Trainer, module: NARMModule, callbacks: RunCallbacks,
                    stats: dict[str, Any], n_params: int, fit_seconds: float, best_path: str | None
                    ) -> dict[str, Any]:
    """``results.json``: the selected epoch, its valid metrics, the test metrics, timing and sizes."""
    key, validating = plan.valid_key, callbacks.best is not None
    epoch_log = next((c for c in callbacks.others if isinstance(c, EpochLog)), None)
    # epochs this process trained (a resumed run's earlier epochs were timed by the process that ran them)
    epochs_timed = trainer.current_epoch - callbacks.state.start_epoch if plan.cfg.epochs > 0 else 0
    best = (best_epoch(module.valid_history, key) if validating
            else {"epoch": max(trainer.current_epoch - 1, 0)})  # counted from 0, as valid_history counts
    return {
        "valid_metric": key,
        "model_selection": f"best valid {key}" if validating else "last epoch (data.valid_ratio=0)",
        "best_valid_score": best.get(key),  # None without validation
        "best_epoch": int(best["epoch"]),
        "best_valid": {k: v for k, v in best.items() if k != "epoch"},
        "test": module.test_results,
        "extra_tests": module.extra_test_results,  # extra_test_modes: mode -> the test metrics under it
        "epochs_run": len(module.valid_history) if validating else trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 3),
        "epochs_timed": epochs_timed,
        "seconds_per_epoch": round(fit_seconds / epochs_timed, 3) if epochs_timed else None,  # train + valid
        # each epoch this process ran, first included (it compiles kernels): whole, and its training part alone
        "epoch_seconds": [round(x, 3) for x in epoch_log.seconds] if epoch_log else [],
        "train_epoch_seconds": [round(x, 3) for x in epoch_log.train_seconds] if epoch_log else [],
        "peak_rss_mib": peak_rss_mib(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # the heap settings it ran with (entry.py sets them)
        "n_parameters": n_params,
        "precision": trainer.precision,
        "dataset": stats,
        "best_checkpoint": str(best_path),
        "run_dir": str(plan.run_dir),
    }


def report_results(plan: RunPlan, results: dict[str, Any], loggers: list[pl.loggers.Logger]) -> None:
    """``results.json``, the loggers' summaries and the console table."""
    write_json_atomic(plan.run_dir / "results.json", results)
    log_results(loggers, results)
    metric_name, _ = parse_metric_name(plan.cfg.valid_metric)
    validated = results["model_selection"].startswith("best")
    selection = f"selected on {metric_name.upper()} ({plan.valid_key})" if validated else "no validation: last epoch"
    print(f"\nNARM on {plan.cfg.data.dataset}: {selection}\n"
          f"{format_results(results, plan.cfg.get('metric_decimal_place', 4))}")
    print(f"results: {plan.run_dir / 'results.json'}")
