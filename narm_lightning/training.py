"""``train(cfg)``: the only place that maps the config to objects; build, fit, test the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from narm_lightning.config import negative_sampling, parse_metric_name, validate
from narm_lightning.data.datamodule import SequentialDataModule
from narm_lightning.data.protocol import SequentialData
from narm_lightning.data.sources import load_user_sequences
from narm_lightning.io import write_json_atomic, write_text_atomic
from narm_lightning.loggers import build_loggers
from narm_lightning.losses import build_loss
from narm_lightning.model import NARM
from narm_lightning.module import NARMModule, best_epoch

log = logging.getLogger(__name__)


def resolve_output_dir(output_dir: str | Path | None) -> Path:
    """The given folder, else the running Hydra job's output folder."""
    if output_dir is not None:
        return Path(output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError("train(cfg) outside a Hydra app needs output_dir=")


def load_data(cfg: DictConfig) -> SequentialData:
    d = cfg.data
    return load_user_sequences(
        dataset=d.dataset,
        root=d.root,
        extra_roots=list(d.extra_roots or []),
        user_field=d.user_id_field,
        item_field=d.item_id_field,
        time_field=d.time_field,
        max_len=d.max_item_list_length,
        download=d.download,
    )


def build_module(cfg: DictConfig, n_items: int) -> NARMModule:
    m = cfg.model
    model_config = {
        "n_items": n_items,
        "embedding_size": m.embedding_size,
        "hidden_size": m.hidden_size,
        "n_layers": m.n_layers,
        "dropout_probs": list(m.dropout_probs),
    }
    model = NARM(**model_config)
    loss = build_loss(m.loss_type, n_items, negative_sampling(cfg.train_neg_sample_args))
    return NARMModule(
        model,
        loss,
        learner=cfg.learner,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        topk=list(cfg.topk),
        metrics=list(cfg.metrics),
        model_config={**model_config, "loss_type": m.loss_type},
    )


def format_results(results: dict[str, Any]) -> str:
    """A readable table of best-valid and test metrics for the end of the console output."""
    valid, test = results["best_valid"], results["test"]
    names = list(test) or list(valid)
    head = f"best valid (epoch {results['best_epoch']})"
    width = max(len(n) for n in names + ["metric"])
    lines = [f"{'metric':<{width}}  {head:>24}  {'test':>10}", "-" * (width + 38)]
    for name in names:
        lines.append(f"{name:<{width}}  {valid.get(name, float('nan')):>24.4f}  {test.get(name, float('nan')):>10.4f}")
    return "\n".join(lines)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Train NARM as ``cfg`` says; write ``results.json`` and the best checkpoint into the run folder.

    Returns the results dict; ``best_valid_score`` is the sweep objective.
    """
    validate(cfg)
    run_dir = resolve_output_dir(output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    data = load_data(cfg)
    log.info("Data: %s", data.stats)
    module = build_module(cfg, data.n_items)
    n_params = sum(p.numel() for p in module.model.parameters())
    datamodule = SequentialDataModule.from_config(cfg, data)

    metric_name, _ = parse_metric_name(cfg.valid_metric)
    valid_key = cfg.valid_metric.lower()
    monitor = f"valid/{valid_key}"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode="max",
        save_last=True, auto_insert_metric_name=False,
    )
    # RecBole stops once stopping_step epochs in a row have failed to improve, checked after the next one.
    stopper = EarlyStopping(monitor=monitor, mode="max", patience=cfg.stopping_step + 1)
    callbacks: list[pl.Callback] = [checkpoint, stopper]
    t = cfg.trainer
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        check_val_every_n_epoch=cfg.eval_step,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=build_loggers(OmegaConf.to_container(cfg.logger, resolve=True), run_dir) or False,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - started
    best = best_epoch(module.valid_history, valid_key)
    trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path or None, verbose=False)
    results: dict[str, Any] = {
        "valid_metric": valid_key,
        "best_valid_score": best[valid_key],
        "best_epoch": int(best["epoch"]),
        "best_valid": {k: v for k, v in best.items() if k != "epoch"},
        "test": module.test_results,
        "epochs_run": len(module.valid_history),
        "fit_seconds": round(fit_seconds, 3),
        "n_parameters": n_params,
        "dataset": data.stats,
        "best_checkpoint": str(checkpoint.best_model_path),
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "results.json", results)
    print(f"\nNARM on {cfg.data.dataset}: selected on {metric_name.upper()} ({valid_key})\n{format_results(results)}")
    print(f"results: {run_dir / 'results.json'}")
    return results
