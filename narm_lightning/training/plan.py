"""Where a run writes and whether it starts or continues: the run folder, the checkpoint to resume, the refusal of
a used or finished folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from narm_lightning.config.validation import validate
from narm_lightning.errors import ConfigError, DataError, first_line
from narm_lightning.io import remove_stale_temp_files
from narm_lightning.recbole.config import with_recbole_config_file
from narm_lightning.training.checkpointing import (
    check_resume_config,
    load_yaml_config,
    read_run_state,
)
from narm_lightning.training.run_folder import check_fresh_run_dir, resume_paths
from narm_lightning.training.runlock import lock_run_dir


def resolve_output_dir(output_dir: str | Path | None) -> Path:
    """The given folder, else the running Hydra job's output folder."""
    if output_dir is not None:
        return Path(output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError("train(cfg) outside a Hydra app needs output_dir=")


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


def failure_reason(exc: Exception, file: Path) -> str:
    """An error's message without the file name it starts with (the caller names the file once)."""
    if not isinstance(exc, DataError):
        return "no state_dict"
    text = str(exc).removeprefix(f"{file}: ").rstrip(".")
    for said_once in ("; refused, nothing in the file was imported or run", "; nothing in the file was run"):
        text = text.replace(said_once, "")
    return text


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
