"""``train(cfg)``: the only place that maps the config to objects; build, fit, test the best checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from narm_lightning.cli.entry import hand_sigterm_to_lightning
from narm_lightning.config.eval_args import mode_of
from narm_lightning.config.validation import data_problems, negative_sampling, parse_metric_name, validate
from narm_lightning.data.candidates import FILE_NAME as CANDIDATES_FILE
from narm_lightning.data.candidates import Mode, member
from narm_lightning.data.candidates import prepare as prepare_candidates
from narm_lightning.data.candidates import save as save_candidates
from narm_lightning.data.card import active_filters, filled_eval_args, protocol_card
from narm_lightning.data.datamodule import SequentialDataModule
from narm_lightning.data.protocol import SequentialData, Split
from narm_lightning.data.sources import click_columns, load_benchmark, load_clicks, load_sessions, load_user_sequences
from narm_lightning.errors import ConfigError, DataError, RunInterrupted, first_line
from narm_lightning.io import flatten, remove_stale_temp_files, write_json_atomic, write_text_atomic
from narm_lightning.model.losses import build_loss
from narm_lightning.model.module import NARMModule, best_epoch
from narm_lightning.model.narm import NARM
from narm_lightning.recbole.checkpoint import load_recbole_state_dict
from narm_lightning.recbole.config import apply_recbole_config, read_recbole_file
from narm_lightning.safe_load import load_torch_checkpoint
from narm_lightning.sweeping.pruning import OptunaPruningCallback, callback_from_config
from narm_lightning.tracking.loggers import build_loggers, finish_loggers, log_results
from narm_lightning.tracking.wandb_runs import state_of
from narm_lightning.training.checkpointing import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    RunCheckpoint,
    RunState,
    check_fresh_run_dir,
    check_resume_config,
    check_resume_data,
    keep_csv_history,
    load_yaml_config,
    read_run_state,
    resume_paths,
)
from narm_lightning.training.console import CompactProgressBar, quiet_third_party
from narm_lightning.training.epoch_log import EpochLog, bar_shown
from narm_lightning.training.hostcheck import slow_allocation_advice, thp_mode
from narm_lightning.training.interrupts import DeferredInterrupt
from narm_lightning.training.runlock import lock_run_dir, release_run_dirs

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
    roots = list(d.extra_roots or [])
    if d.format == "atomic" and d.get("benchmark_filename"):
        return load_benchmark(d.dataset, d.root, roots, list(d.benchmark_filename), d.item_id_field,
                              d.max_item_list_length)
    if d.format == "atomic":
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
    if d.format != "atomic" and "path" in d:  # data=clicks: a user's own log
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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16), where bf16 autocast pays.

    Elsewhere torch emulates bf16 on the CPU, which is slower than fp32, so ``precision: auto`` stays fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``trainer.precision`` for Lightning: ``auto`` is bf16-mixed on a GPU or a bf16-capable CPU, else 32-true."""
    precision = str(trainer_cfg.precision)
    if precision != "auto":
        return precision
    accelerator = str(trainer_cfg.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed"
    return "bf16-mixed" if accelerator in ("cpu", "auto") and cpu_has_native_bf16() else "32-true"


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


def with_recbole_config_file(cfg: DictConfig) -> DictConfig:
    """Apply ``config_file`` (a RecBole .yaml) under the command line's own overrides."""
    if not cfg.get("config_file"):
        return cfg
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    source = f"config_file={cfg.config_file}"
    return apply_recbole_config(cfg, read_recbole_file(cfg.config_file), overrides, source=source)


def _reason(exc: Exception, file: Path) -> str:
    """An error's message without the file name it starts with (the caller names the file once)."""
    if not isinstance(exc, DataError):
        return "no state_dict"
    text = str(exc).removeprefix(f"{file}: ").rstrip(".")
    for said_once in ("; refused, nothing in the file was imported or run", "; nothing in the file was run"):
        text = text.replace(said_once, "")
    return text


def load_initial_weights(module: NARMModule, path: str) -> None:
    """Start from a narm-lightning ``.ckpt`` or a RecBole ``.pth`` (read without running its pickles)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"init_from={path}: no such file; expected a narm-lightning .ckpt or a RecBole .pth.")
    saved_items: list[str] | None = None
    try:
        ckpt = load_torch_checkpoint(file)
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        saved_items = ckpt.get("item_tokens")
    except (DataError, TypeError, KeyError, AttributeError) as ours:  # not ours: RecBole's reader, its own allowlist
        try:
            state = load_recbole_state_dict(file)
        except DataError as theirs:
            raise ConfigError(f"init_from={path}: neither a narm-lightning checkpoint ({_reason(ours, file)}) nor "
                              f"a RecBole one ({_reason(theirs, file)}). Nothing in the file was run.") from None
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


def check_distributed_launch(cfg: DictConfig) -> None:
    """Refuse ``trainer=ddp`` inside a Hydra multirun when Lightning would start the extra processes itself.

    Lightning starts them by re-running the command line, and a sweep's command line starts the whole
    sweep again in each of them. Under torchrun or srun the processes already exist and nothing is re-run.
    """
    if cfg.trainer.get("strategy", "auto") != "ddp":
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    externally_launched = any(k in os.environ for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and not externally_launched:
        raise ConfigError(
            "trainer.strategy is 'ddp' inside a sweep (-m): Lightning would start each extra process by re-running "
            "the sweep command, starting the whole sweep again. Sweep with one process per trial and run several "
            "sweep workers instead (docs/scaling-out.md), or launch every process yourself with torchrun or "
            "SLURM's srun, which Lightning detects."
        )


@contextlib.contextmanager
def stopped_by_signals(trainer: pl.Trainer, run_dir: Path) -> Iterator[None]:
    """Lightning's ways of stopping on a signal, as one ``RunInterrupted`` that says how to resume.

    On SIGTERM Lightning ends the loop with ``SIGTERMException``, a ``SystemExit`` with no code (exit 0:
    "done" to a scheduler); on Ctrl-C it calls ``sys.exit(1)``. Both keep the last finished epoch in
    ``last.ckpt``, written atomically.
    """
    try:
        yield
    except SIGTERMException:
        raise _interrupted("SIGTERM", trainer, run_dir) from None
    except SystemExit:
        if trainer.interrupted:  # Lightning's KeyboardInterrupt handler
            raise _interrupted("SIGINT", trainer, run_dir) from None
        raise


def _interrupted(name: str, trainer: pl.Trainer, run_dir: Path) -> RunInterrupted:
    last = run_dir / LAST_CHECKPOINT
    where = f"during epoch {trainer.current_epoch}" if trainer.state.fn == "fit" else "while testing"
    if last.is_file():
        how = (f"{last} holds every finished epoch; resume with:\n  python train.py resume={run_dir}")
    else:
        how = "no epoch had finished, so there is nothing to resume: run the command again."
    return RunInterrupted(name, 128 + getattr(signal, name), f"stopped by {name} {where}; {how}",
                          run_dir=run_dir.resolve() if last.is_file() else None)


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (rank 0's alone under DDP); None off Unix."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def format_results(results: dict[str, Any], decimals: int = 4) -> str:
    """A readable table of best-valid and test metrics (and each extra test mode's) for the end of the console."""
    valid, test = results["best_valid"], results["test"]
    extra = results.get("extra_tests") or {}
    names = list(test) or list(valid)
    head = f"best valid (epoch {results['best_epoch']})" if valid else f"no valid (epoch {results['best_epoch']})"
    width = max(len(n) for n in names + ["metric"])
    columns = [f"{'metric':<{width}}  {head:>24}  {'test':>10}", *(f"{'test ' + m:>12}" for m in extra)]
    lines = ["  ".join(columns), "-" * (width + 38 + 14 * len(extra))]
    for name in names:
        shown = f"{valid[name]:.{decimals}f}" if name in valid else "-"
        cells = [f"{name:<{width}}  {shown:>24}  {test.get(name, float('nan')):>10.{decimals}f}",
                 *(f"{values.get(name, float('nan')):>12.{decimals}f}" for values in extra.values())]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Train NARM as ``cfg`` says; write ``results.json`` and the best checkpoint into the run folder.

    Returns the results dict; ``best_valid_score`` is the sweep objective. The W&B run is finished whatever
    happens (tagged complete, pruned on ``optuna.TrialPruned``, failed otherwise), so the next run in this
    process starts clean.
    """
    loggers: list[pl.loggers.Logger] = []
    try:
        results = _train(cfg, output_dir, loggers)
    except BaseException as exc:
        finish_loggers(loggers, state_of(exc))
        raise
    else:
        finish_loggers(loggers, "complete")
    finally:
        release_run_dirs()  # after the W&B run's last write; a sweep's next trial in this process writes another folder
    return results


@dataclass(frozen=True)
class RunPlan:
    """What a run is before anything is read or written: its config, folder, and what it resumes from."""

    cfg: DictConfig
    run_dir: Path
    resume_ckpt: Path | None = None
    resumed_state: dict[str, Any] | None = None
    lead: bool = True  # global rank 0: the one process that writes the run folder's files (DDP)

    @property
    def valid_key(self) -> str:
        return str(self.cfg.valid_metric).lower()


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
    hand_sigterm_to_lightning()
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


def plan_run(cfg: DictConfig, output_dir: str | Path | None) -> RunPlan:
    """The RecBole config file merged, the config validated, resume and run-folder checks: before any read."""
    cfg = with_recbole_config_file(cfg)
    validate(cfg)
    check_distributed_launch(cfg)
    lead = rank_zero_only.rank == 0  # known from the launcher's environment before the process group exists
    if cfg.get("resume"):
        run_dir, last = resume_paths(cfg.resume)
        if lead:
            lock_run_dir(run_dir)  # one writer: a resume of a run still training is refused
            remove_stale_temp_files(run_dir / "checkpoints")  # writes a kill -9 cut short; we hold the folder
        check_resume_config(cfg, run_dir)
        check_not_finished(cfg, run_dir)
        return RunPlan(cfg, run_dir, last, read_run_state(last), lead)
    run_dir = resolve_output_dir(output_dir)
    if lead:  # DDP's other ranks run into the folder rank 0 has begun (and locked)
        lock_run_dir(run_dir)
        check_fresh_run_dir(run_dir)
        remove_stale_temp_files(run_dir / "checkpoints")
    return RunPlan(cfg, run_dir, lead=lead)


def check_not_finished(cfg: DictConfig, run_dir: Path) -> None:
    """A finished run (``results.json``) continues only to train longer: ``epochs`` above what it ran to, and only
    if early stopping did not end it. Anything else would retrain nothing and overwrite its results."""
    results_file = run_dir / "results.json"
    if not results_file.exists():
        return
    try:
        done = json.loads(results_file.read_text("utf-8"))
        epochs_run = int(done["epochs_run"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError(f"resume={run_dir}: {results_file} is not a readable results file ({first_line(exc)}); "
                          "the run finished, so there is nothing to resume.") from None
    saved_epochs = int(load_yaml_config(run_dir / "config.yaml").get("epochs", epochs_run))
    if epochs_run < saved_epochs:
        why = f"early stopping ended it after {epochs_run} of {saved_epochs} epochs"
    elif int(cfg.epochs) <= epochs_run:
        why = f"it ran all its {epochs_run} epochs (give epochs above {epochs_run} to train it longer)"
    else:
        return
    raise ConfigError(f"resume={run_dir}: the run is finished ({results_file.name}: {why}); nothing to resume, "
                      "and its results stay as they are. To start from its weights: init_from="
                      f"{run_dir / 'checkpoints' / 'best.ckpt'} in a new run.")


def read_data(plan: RunPlan) -> tuple[SequentialData, str]:
    """The dataset and its fingerprint; a resumed run must see the examples it was trained on."""
    data = load_data(plan.cfg)
    fingerprint = data.fingerprint()
    if plan.resume_ckpt is not None and plan.resumed_state is not None:
        check_resume_data(plan.resumed_state, fingerprint, data.source, plan.resume_ckpt)
    return data, fingerprint


def describe_run(cfg: DictConfig, stats: dict[str, Any], n_params: int) -> str:
    """One readable line: the dataset's size and the model's, as RecBole prints them at start (a click log's
    preprocessing before it: what was read and dropped)."""
    word = f"{stats.get('sequence_word', 'user')}s"
    users = f"{stats['n_users']:,} {word}, " if "n_users" in stats else ""
    read = ""
    if "preprocess" in stats:
        p = stats["preprocess"]
        read = (f"read {p['clicks']:,} clicks in {p['sessions']:,} {word} on {p['items']:,} items; dropped "
                f"{p['one_click_sessions']:,} {word} of one click and {p['rare_items']:,} items seen fewer than "
                f"{cfg.data.get('min_item_support', 5)} times; {p['train_sessions']:,} train / "
                f"{p['test_sessions']:,} test {word}. ")
    inter = f", {stats['n_interactions']:,} interactions" if "n_interactions" in stats else ""
    return (f"{cfg.data.dataset}: {read}{users}{stats['n_items']:,} items{inter}; examples train "
            f"{stats['n_train']:,} / valid {stats['n_valid']:,} / test {stats['n_test']:,}, mean history "
            f"{stats['avg_seq_len']:.1f}. "
            f"NARM: {n_params:,} parameters, precision {resolve_precision(cfg.trainer)}.")


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
        plugins=[AtomicCheckpointIO()],
    )


_host_warned = False


def warn_host_once() -> None:
    """The huge-page advice, once per process (a sweep runs many trials in one)."""
    global _host_warned
    advice = None if _host_warned else slow_allocation_advice(thp_mode())
    if advice:
        log.warning(advice)
    _host_warned = True


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
