"""The run's parts, each built alone from the config: data, DataModule, module (with its initial weights),
callbacks, loggers, Trainer. ``run.py`` puts them together; the benchmarks call them too."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping

from narm_lightning.config.eval_args import mode_of
from narm_lightning.config.validation import data_problems, negative_sampling
from narm_lightning.data.candidates import Mode, member
from narm_lightning.data.candidates import prepare as prepare_candidates
from narm_lightning.data.card import active_filters, filled_eval_args
from narm_lightning.data.datamodule import SequentialDataModule
from narm_lightning.data.locate import source_kind
from narm_lightning.data.protocol import SequentialData, Split
from narm_lightning.data.sources import click_columns, load_benchmark, load_clicks, load_sessions, load_user_sequences
from narm_lightning.errors import ConfigError, DataError
from narm_lightning.io import flatten
from narm_lightning.model.losses import build_loss
from narm_lightning.model.module import NARMModule
from narm_lightning.model.narm import NARM
from narm_lightning.recbole.checkpoint import load_recbole_state_dict
from narm_lightning.safe_load import init_from_file, load_torch_checkpoint
from narm_lightning.sweeping.pruning import OptunaPruningCallback, callback_from_config
from narm_lightning.tracking.loggers import build_loggers
from narm_lightning.training.checkpointing import (
    AtomicCheckpointIO,
    RunCheckpoint,
    RunState,
    keep_csv_history,
)
from narm_lightning.training.console import CompactProgressBar, quiet_third_party
from narm_lightning.training.epoch_log import EpochLog, bar_shown
from narm_lightning.training.interrupts import DeferredInterrupt
from narm_lightning.training.plan import RunPlan, failure_reason
from narm_lightning.training.precision import resolve_precision

log = logging.getLogger(__name__)


def load_data(cfg: DictConfig) -> SequentialData:
    d = cfg.data
    roots = list(d.extra_roots or [])
    kind = source_kind(d)
    if kind == "benchmark":
        return load_benchmark(d.dataset, d.root, roots, list(d.benchmark_filename), d.item_id_field,
                              d.max_item_list_length)
    if kind == "atomic":
        return load_user_sequences(
            dataset=d.dataset,
            root=d.root,
            extra_roots=roots,
            user_field=d.user_id_field,
            item_field=d.item_id_field,
            time_field=d.time_field,
            max_len=d.max_item_list_length,
            download=d.download,
            split=Split.from_eval_args(filled_eval_args(cfg)),
            filters=active_filters(d),
            time_order=d.time_order,
            normalize_time=d.normalize_all,
        )
    if kind == "clicks":  # data=clicks: a user's own log
        return load_clicks(
            d.path, click_columns(d.user_field or d.session_field, d.item_field, d.time_field, d.order_field,
                                  by_user=d.user_field is not None),
            fmt=d.format, delimiter=d.delimiter, column_names=d.column_names, time_format=d.time_format,
            split=d.split, test_days=d.test_days, min_item_support=d.min_item_support, fraction=d.fraction,
            valid_ratio=d.valid_ratio, max_items=d.max_items, cache_dir=d.cache_dir, max_len=d.max_item_list_length,
            seed=cfg.seed, eval_split=Split.from_eval_args(filled_eval_args(cfg)))
    raw_options = {
        "cache_dir": d.get("cache_dir"),
        "sort_by_timeframe": d.get("sort_by_timeframe", True),
        "fraction": d.get("fraction", 64),
        "test_days": d.get("test_days"),
        "min_item_support": d.get("min_item_support", 5),
        "tie_order": d.get("tie_order", "first_seen"),
    }
    return load_sessions(
        dataset=d.dataset,
        fmt=d.format,
        root=d.root,
        extra_roots=roots,
        max_len=d.max_item_list_length,
        valid_ratio=d.valid_ratio,
        seed=cfg.seed,
        raw_dataset=d.get("raw_dataset"),
        raw_folder=d.get("raw_folder"),
        raw_options=raw_options,
    )


def build_datamodule(cfg: DictConfig, data: SequentialData, generator: torch.Generator | None = None,
                     candidates: dict[str, torch.Tensor] | None = None) -> SequentialDataModule:
    """The batches the config asks for (shared by ``train`` and ``bench/bench.py``); ``candidates``: the sampled
    modes' (``candidates.prepare``), one test loader per test mode."""
    modes, candidates = eval_modes(cfg), candidates or {}
    return SequentialDataModule(data, cfg.train_batch_size, cfg.eval_batch_size, cfg.data.num_workers,
                                bucket_batches=cfg.data.get("bucket_batches", 0) or 0, seed=cfg.seed,
                                generator=generator,
                                valid_candidates=candidates.get(member("valid", modes["valid"][0])),
                                test_candidates=[candidates.get(member("test", m)) for m in modes["test"]])


def eval_modes(cfg: DictConfig) -> dict[str, list[Mode]]:
    """Each split's evaluation modes: valid's ``eval_args.mode``; test's, then ``extra_test_modes``."""
    mode = filled_eval_args(cfg)["mode"]
    return {"valid": [Mode(mode_of(mode, "valid"))],
            "test": [Mode(mode_of(mode, "test")), *(Mode(m) for m in cfg.get("extra_test_modes") or [])]}


def eval_candidates(cfg: DictConfig, data: SequentialData, fingerprint: str) -> dict[str, torch.Tensor]:
    """The sampled modes' candidates: ``data.eval_candidates``'s, else drawn once from ``eval_candidates_seed``
    (popularity by ``count ** alpha``: the training negatives' alpha when BPR samples, else 1, as RecBole)."""
    neg = negative_sampling(cfg.train_neg_sample_args)
    return prepare_candidates(eval_modes(cfg), data, fingerprint, int(cfg.data.eval_candidates_seed),
                              neg.alpha if neg is not None else 1.0, cfg.data.get("eval_candidates"))


def build_module(cfg: DictConfig, n_items: int, item_tokens: Sequence[str] | None = None,
                 train_targets: torch.Tensor | None = None, all_targets: torch.Tensor | None = None) -> NARMModule:
    m = cfg.model
    model_config = {
        "n_items": n_items,
        "embedding_size": m.embedding_size,
        "hidden_size": m.hidden_size,
        "n_layers": m.n_layers,
        "dropout_probs": list(m.dropout_probs),
        "gru_impl": m.gru_impl,
    }
    model = NARM(**model_config)
    counts = None if all_targets is None else torch.bincount(all_targets.flatten(), minlength=n_items)
    loss = build_loss(m.loss_type, n_items, negative_sampling(cfg.train_neg_sample_args), counts)
    return NARMModule(
        model,
        loss,
        learner=cfg.learner,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        topk=list(cfg.topk),
        metrics=list(cfg.metrics),
        model_config={**model_config, "loss_type": m.loss_type},
        item_tokens=item_tokens,
        data_config={"max_item_list_length": cfg.data.max_item_list_length},  # serving keeps this window
        item_popularity=None if train_targets is None else torch.bincount(train_targets.flatten(), minlength=n_items),
        tail_ratio=cfg.get("tail_ratio"),
        test_names=["test", *(f"test_{m}" for m in cfg.get("extra_test_modes") or [])],
    )


def load_initial_weights(module: NARMModule, path: str) -> None:
    """Start from a narm-lightning ``.ckpt`` or a RecBole ``.pth`` (read without running its pickles)."""
    file = init_from_file(path)
    saved_items: list[str] | None = None
    try:
        ckpt = load_torch_checkpoint(file)
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        saved_items = ckpt.get("item_tokens")
    except (DataError, TypeError, KeyError, AttributeError) as ours:  # not ours: RecBole's reader, its own allowlist
        try:
            state = load_recbole_state_dict(file)
        except DataError as theirs:
            ours_why, theirs_why = failure_reason(ours, file), failure_reason(theirs, file)
            raise ConfigError(f"init_from={path}: neither a narm-lightning checkpoint ({ours_why}) nor a RecBole one "
                              f"({theirs_why}). Nothing in the file was run.") from None
    own = module.model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    if mismatched or missing:
        raise ConfigError(
            f"init_from={path}: its weights do not fit this model and dataset "
            f"({'; '.join(mismatched + [f'missing {k}' for k in missing])}); use the same dataset and model sizes."
        )
    check_same_items(path, saved_items, module.item_tokens)
    module.model.load_state_dict(state, strict=False)
    log.info("Initial weights from %s", path)


def check_same_items(path: str, saved: Sequence[Any] | None, current: Sequence[str] | None) -> None:
    """Weights are per item row: a checkpoint of another dataset with as many items would load and mean nothing.
    Our checkpoints name their items (RecBole's do not: there only the shapes can be checked)."""
    if saved is None or current is None:
        return
    saved = [str(t) for t in saved]
    if saved != list(current):
        differ = [i for i, (a, b) in enumerate(zip(saved, current)) if a != b]
        first = differ[0] if differ else min(len(saved), len(current))
        shown = (f"row {first}: {saved[first]!r} there, {current[first]!r} here" if differ else
                 f"{len(saved):,} item ids there, {len(current):,} here")
        raise ConfigError(f"init_from={path}: trained on other items ({len(differ):,} of {len(current):,} item ids "
                          f"differ; {shown}); its weights would score the wrong items. Use a checkpoint of this "
                          "dataset (same data.* settings).")


def check_against_data(cfg: DictConfig, data: SequentialData) -> None:
    """The config checks that need the data (K vs the catalogue, batch limits), before any file is written."""
    sizes = {"train": (len(data.train), cfg.train_batch_size), "val": (len(data.valid), cfg.eval_batch_size),
             "test": (len(data.test), cfg.eval_batch_size)}
    problems = data_problems(cfg, data.n_items - 1, {k: math.ceil(n / b) for k, (n, b) in sizes.items()})
    if problems:
        raise ConfigError(f"Invalid config for {cfg.data.dataset}: " + "; ".join(problems) + ".")


@dataclass
class RunCallbacks:
    """The callbacks of one run; ``best`` is None without validation (``data.valid_ratio=0``)."""

    best: RunCheckpoint | None
    last: RunCheckpoint
    state: RunState
    others: list[pl.Callback]

    def all(self) -> list[pl.Callback]:
        return [c for c in (self.best, self.last, *self.others, self.state) if c is not None]

    def best_path(self) -> str | None:
        return (self.best or self.last).best_model_path or None


def build_callbacks(plan: RunPlan, validating: bool, state: RunState) -> RunCallbacks:
    """best.ckpt (on valid_metric), last.ckpt after every epoch, early stopping, run state, trial pruning."""
    cfg, folder, monitor = plan.cfg, plan.run_dir / "checkpoints", f"valid/{plan.valid_key}"
    best = RunCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode="max", auto_insert_metric_name=False)
    # last.ckpt after every epoch, validated or not, so a kill loses at most one epoch (Lightning's own
    # save_last only writes when the best checkpoint was written in the same step)
    last = RunCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True)
    # RecBole stops once stopping_step epochs in a row have failed to improve, checked after the next one.
    others: list[pl.Callback] = [EarlyStopping(monitor=monitor, mode="max", patience=cfg.stopping_step + 1)]
    if not validating:  # data.valid_ratio=0 (a refit on every training example): the last epoch is tested
        best, others = None, []
    pruning = callback_from_config(cfg.get("optuna"), monitor=monitor)
    if pruning is not None:  # a sweep trial: report valid_metric each epoch, stop when the pruner says so
        others.append(pruning)
    others.append(DeferredInterrupt())  # Ctrl-C at the next batch boundary (narm_lightning/training/interrupts.py)
    # after EarlyStopping, so its line shows the patience as this epoch left it
    others.append(EpochLog(monitor, bar=bar_shown(cfg.trainer.enable_progress_bar)))
    return RunCallbacks(best, last, state, others)


def build_run_loggers(plan: RunPlan, stats: dict[str, Any], n_params: int, callbacks: RunCallbacks,
                      card: dict[str, Any] | None = None) -> list[pl.loggers.Logger]:
    """The ``logger`` group's loggers, named after the trial in a sweep, else after dataset and time."""
    cfg = plan.cfg
    if plan.resume_ckpt is not None and plan.lead:
        keep_csv_history(plan.run_dir)  # before the CSV logger starts: it would replace metrics.csv
    run_config = {**flatten(OmegaConf.to_container(cfg, resolve=True)), "n_parameters": n_params,
                  **flatten(stats, "data_stats."), **flatten(card or {}, "protocol.")}
    pruning = next((c for c in callbacks.others if isinstance(c, OptunaPruningCallback)), None)
    name = (f"trial-{pruning.reporter.number}" if pruning is not None
            else f"{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return build_loggers(OmegaConf.to_container(cfg.logger, resolve=True), plan.run_dir, run_config,
                         default_name=name, default_group=OmegaConf.select(cfg, "optuna.study_name", default=None),
                         wandb_dir=sweep_dir())


def sweep_dir() -> Path | None:
    """The sweep's folder inside a Hydra multirun (None otherwise): every trial's W&B run goes under its
    ``wandb/``, beside the summary run, so ``wandb leet <sweep dir>`` browses the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(str(HydraConfig.get().sweep.dir))
    return None


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[pl.loggers.Logger], run_dir: Path,
                  validating: bool) -> pl.Trainer:
    """The Lightning Trainer the ``trainer`` group describes."""
    t = cfg.trainer
    quiet_third_party()
    bar = bar_shown(t.enable_progress_bar)  # into a file or pipe: the epoch lines instead (epoch_log.py)
    if bar:
        callbacks = [*callbacks, CompactProgressBar(monitor=f"valid/{str(cfg.valid_metric).lower()}")]
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.get("num_nodes", 1),
        strategy=t.get("strategy", "auto"),
        # the datamodule shards batches per rank itself (see data/datamodule.py): no DistributedSampler
        use_distributed_sampler=False,
        precision=resolve_precision(t),
        deterministic=t.deterministic,
        enable_progress_bar=bar,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.get("limit_val_batches") if validating else 0,
        limit_test_batches=t.get("limit_test_batches"),
        check_val_every_n_epoch=cfg.eval_step,
        num_sanity_val_steps=0,
        # RecBole: clip_grad_norm_(parameters, **clip_grad_norm) after backward; Lightning clips the 2-norm the same
        # way (after unscaling under 16-bit AMP)
        gradient_clip_val=(cfg.get("clip_grad_norm") or {}).get("max_norm"),
        gradient_clip_algorithm="norm",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        # no_grad for testing too, as fit's validation runs: under inference_mode the GRU's compiled inference kernel
        # sees tensors of other dispatch keys and is compiled again at test (~0.4 s a process)
        inference_mode=False,
        plugins=[AtomicCheckpointIO()],
    )
