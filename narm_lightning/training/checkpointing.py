"""Crash-safe checkpoints and exact resume.

* ``AtomicCheckpointIO``: Lightning writes checkpoints through fsspec, whose local "transaction" stages
  the file in the system temp folder and then *moves* it (a copy when that is another filesystem, no
  fsync); here a checkpoint is a temp file beside the target, fsynced, then renamed.
* ``RunState``: the random states (Python, NumPy, torch, CUDA, the train shuffle's generator) and the
  per-epoch valid history, saved in every checkpoint as plain data (``torch.load(weights_only=True)``
  reads them) and put back when a run resumes, so a resumed run continues the same random streams.
* ``resume=<run dir>``: the run dir's ``checkpoints/last.ckpt`` and its saved ``config.yaml``; a command
  line that contradicts the saved config is refused, naming each key.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelCheckpoint

from narm_lightning.config.yaml_files import load_yaml_data
from narm_lightning.errors import ConfigError, DataError, first_line
from narm_lightning.io import flatten, require_regular_file, write_bytes_atomic
from narm_lightning.safe_load import load_torch_checkpoint

# keys a resumed run may change: they alter neither the data nor the random streams nor the model
RESUME_MAY_DIFFER = (
    "resume",
    "epochs",
    "trainer.enable_progress_bar",
    "trainer.num_threads",
    "trainer.log_every_n_steps",
    "data.num_workers",
    "optuna",  # which sweep trial the run reports to: a stopped trial's re-run is another trial (or none, by hand)
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to memory, then temp file + fsync + rename: a kill never leaves a torn checkpoint.

    Every checkpoint Lightning reads back (resume's ``last.ckpt``, the best one for the test) goes through
    ``safe_load.load_torch_checkpoint``: weights-only whatever the environment says, errors naming the file.
    """

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        return load_torch_checkpoint(path)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes_atomic(path, buffer.getvalue())


class RunCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose files belong to their run folder, wherever that folder is now.

    Lightning forgets the best score when a checkpoint's saved ``dirpath`` differs from the current one (a
    run folder moved or copied, then resumed) and then writes ``best-v1.ckpt`` beside a stale ``best.ckpt``.
    Here the saved paths are carried over to the current folder, and file names never get a version suffix.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=False, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir and self.dirpath and saved_dir != self.dirpath:
            def here(path: Any) -> Any:
                if isinstance(path, str) and path and Path(path).parent == Path(saved_dir):
                    return str(Path(self.dirpath) / Path(path).name)
                return path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: here(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path",
                                                                 "last_model_path") if k in state_dict},
                          "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)


def _numpy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["gauss"]))


class RunState(pl.Callback):
    """Saves and restores the random streams and the module's ``valid_history`` with each checkpoint.

    States are captured when a checkpoint is written (after the epoch's last random draw) and put back as
    soon as Lightning restores the callbacks (see ``load_state_dict``).
    """

    def __init__(self, shuffle_generator: torch.Generator | None = None, data: Mapping[str, str] | None = None
                 ) -> None:
        self.shuffle_generator = shuffle_generator
        self.data = dict(data or {})  # {"sha256": SequentialData.fingerprint(), "source": files}: resume checks it
        self._module: pl.LightningModule | None = None
        self._stage: str | None = None
        self.start_epoch = 0  # the epoch this process's fit began at (> 0 after a resume): per-epoch timing

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_epoch = trainer.current_epoch

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module
        self._stage = stage

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": _numpy_state(),
            "torch": torch.get_rng_state(),
            "valid_history": [dict(h) for h in getattr(self._module, "valid_history", [])],
            "data": dict(self.data),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self.shuffle_generator is not None:
            state["shuffle"] = self.shuffle_generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Put the states back at once: Lightning restores callbacks before it builds the first epoch's
        loader iterator, and building one draws a seed from torch's global generator, exactly as the
        uninterrupted run did right after this checkpoint was written."""
        if self._stage != "fit":  # trainer.test(ckpt_path=best) restores callbacks too: keep the live history
            return
        state = dict(state_dict)
        if self._module is not None and hasattr(self._module, "valid_history"):
            self._module.valid_history = [dict(h) for h in state.get("valid_history", [])]
        random.setstate(_as_python_state(state["python"]))
        _set_numpy_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if "shuffle" in state and self.shuffle_generator is not None:
            self.shuffle_generator.set_state(state["shuffle"])


def _as_python_state(state: Sequence[Any]) -> tuple[Any, ...]:
    """``random.setstate`` wants tuples; a checkpoint round trip may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def read_run_state(last: Path) -> dict[str, Any]:
    """The ``RunState`` saved in a run's ``last.ckpt``, read safely; a ``DataError`` naming the file otherwise."""
    ckpt = load_torch_checkpoint(last, "narm-lightning checkpoint (the last.ckpt a training run writes)")
    state = ckpt.get("callbacks", {}).get(RunState.__qualname__) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DataError(f"{last}: a torch file, but not a last.ckpt written by narm-lightning's train.py (no "
                        "state_dict or run state); resume needs the run folder's own checkpoint.")
    return state


def check_resume_data(state: Mapping[str, Any], fingerprint: str, source: str, last: Path) -> None:
    """Refuse to resume on data other than the run's: a model would silently train on something else."""
    saved = (state.get("data") or {}).get("sha256")
    if saved is not None and saved != fingerprint:  # checkpoints before this check have no fingerprint
        raise DataError(
            f"resume: the data differ from what {last} was trained on: {source} now gives other examples "
            f"(fingerprint {fingerprint[:12]} vs {saved[:12]} saved: items added, rows changed or reordered, or a "
            "protocol setting changed). Restore that data, or start a new run without resume=."
        )


def keep_csv_history(run_dir: Path) -> list[Path]:
    """Before a resume, move each ``<logger>/metrics.csv`` aside (``metrics.part<k>.csv``).

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; the resumed run writes a
    fresh one and the earlier epochs stay in the numbered parts.
    """
    kept = []
    for metrics in sorted(run_dir.glob("*/metrics.csv")):
        k = 1
        while (metrics.parent / f"metrics.part{k}.csv").exists():
            k += 1
        kept.append(metrics.rename(metrics.parent / f"metrics.part{k}.csv"))
    return kept


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two configs, outside ``RESUME_MAY_DIFFER``."""
    a, b = flatten(saved), flatten(current)
    allowed = tuple(RESUME_MAY_DIFFER)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in allowed or key.startswith(tuple(f"{k}." for k in allowed)):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key} was {a.get(key, '<absent>')!r} and is now {b.get(key, '<absent>')!r}")
    return diffs


def check_resume_config(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a resume whose config contradicts the run's saved ``config.yaml``."""
    saved = OmegaConf.to_container(load_yaml_config(run_dir / "config.yaml"), resolve=True)
    current = OmegaConf.to_container(cfg, resolve=True)
    diffs = config_differences(saved, current)  # type: ignore[arg-type]
    if diffs:
        raise ConfigError(
            f"resume={run_dir}: the config differs from the run's saved {run_dir / 'config.yaml'}: "
            + "; ".join(diffs)
            + ". Drop those overrides (the saved config is used) or start a new run; only "
            + ", ".join(RESUME_MAY_DIFFER[1:-1]) + " may change on resume."
        )


def load_yaml_config(path: Path) -> DictConfig:
    """A saved ``config.yaml`` as a DictConfig, or a ``ConfigError`` naming the file (never a traceback).

    Read as untrusted data (``yaml_files``): a run folder may come from anyone, and a ``${oc.env:...}`` in
    it would be resolved (and its secret shown) when the config is compared or saved.
    """
    file = require_regular_file(path, "the run's saved config (YAML)")
    try:
        text = file.read_text("utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable config ({first_line(exc)}); expected the config.yaml a run "
                          "saved. Restore it, or start a new run without resume=.") from None
    loaded = load_yaml_data(text, str(path))
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: holds a {type(loaded).__name__}, not a mapping of keys; expected the config.yaml"
                          " a run saved.")
    try:
        return OmegaConf.create(loaded)
    except (ValueError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{path}: not a readable config ({first_line(exc)}); expected the config.yaml a run "
                          "saved.") from None
