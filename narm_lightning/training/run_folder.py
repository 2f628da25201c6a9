"""A run folder before training starts, read without torch or Lightning (so ``narm-train``'s first frame and its
error paths stay fast): what a run leaves there, whether a new run may start there, and ``resume=<dir>`` made into
the run's own command line (``resume_argv``), its saved overrides read as untrusted data."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from narm_lightning.cli.command_line import config_groups, override_key
from narm_lightning.config.yaml_files import load_yaml_data
from narm_lightning.errors import ConfigError
from narm_lightning.io import require_regular_file
from narm_lightning.training.runlock import lock_run_dir

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
RUN_FILES = ("config.yaml", "results.json", "checkpoints")  # what a run writes into its folder


def check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse to start a new run in a folder that holds one: their checkpoints and configs would mix.

    A run that saved no epoch (no ``last.ckpt``, no ``results.json``: stopped or failed before its first
    epoch ended) has nothing to continue, so its folder may start over: a pinned ``hydra.run.dir`` (a
    requeued scheduler job) reruns the same command there.
    """
    used = [name for name in RUN_FILES if (run_dir / name).exists()]
    if used and not started_over(run_dir):
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(used)}); a new run there would mix its files with that "
            f"one's. Continue it with resume={run_dir}, or give another hydra.run.dir (or remove the folder)."
        )


def started_over(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that saved no epoch (nothing to resume, so it can start again)."""
    return not (run_dir / LAST_CHECKPOINT).exists() and not (run_dir / "results.json").exists()



def _unquoted(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def replayable(arg: str, keys: frozenset[str], groups: Mapping[str, set[str]]) -> bool:
    """Whether a saved override may be replayed: a config key of the schema (``learning_rate=0.01``) or a
    shipped group option (``data=diginetica``, ``logger=[wandb,csv]``), with a plain value.

    Never ``hydra.*`` (callbacks, ``job.env_set``: code and environment), ``+``/``++``/``~`` edits, package
    overrides (``group@pkg``), or a value holding ``${...}`` (a resolver reading the environment): a run
    folder may come from anyone, and what it replays must be what a run is made of, nothing else.
    """
    if arg.startswith(("+", "~")) or "=" not in arg:
        return False
    key, value = arg.split("=", 1)
    if "${" in value or "@" in key or key.startswith(("hydra", "optuna")):
        return False
    if key in groups:
        names = _unquoted(value)
        names = names[1:-1] if names.startswith("[") and names.endswith("]") else names
        return all(_unquoted(n) in groups[key] or _unquoted(n) == "null" for n in names.split(","))
    return key in keys


def read_saved_overrides(saved_file: Path) -> list[str]:
    """A run's ``.hydra/overrides.yaml`` (a YAML list of strings), read as untrusted data."""
    raw = require_regular_file(saved_file, "a YAML list of overrides").read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{saved_file}: not valid YAML (not UTF-8 text: byte {exc.start}); expected the list of "
                          "overrides Hydra saved for the run. Restore it, or delete it and give the run's overrides "
                          "again after resume=.") from None
    # a user's own ${now:...} in hydra.run.dir is saved too: each entry is screened by replayable()
    loaded = load_yaml_data(text, str(saved_file), interpolations=True)
    if not isinstance(loaded, list) or not all(isinstance(a, str) for a in loaded):
        raise ConfigError(f"{saved_file}: holds {type(loaded).__name__}, not a list of override strings; "
                          "expected the overrides Hydra saved for the run.")
    return loaded


def resume_argv(argv: list[str]) -> list[str]:
    """``train.py resume=<dir> [k=v ...]`` -> the run's own overrides replayed, into the same run dir.

    Without ``resume=``, a ``hydra.run.dir=`` that already holds a run is refused (``ConfigError``). Either
    folder is locked for this process before Hydra writes into it (``runlock``): a second writer is refused.

    The saved ``.hydra/overrides.yaml`` goes in right after ``resume=``, keeping only what ``replayable``
    allows (the rest is named on stderr, never run); an override the user repeats replaces the saved one
    (``train`` then refuses it if it changes the config), ``hydra.run.dir=<dir>`` makes the resumed run
    write where the first one did, and ``hydra.output_subdir=null`` leaves that run's ``.hydra/`` untouched.
    """
    at = next((i for i, a in enumerate(argv) if i > 0 and a.startswith("resume=")), None)
    # the extra processes of a DDP run re-run this command into the folder rank 0 has begun (and locked)
    launched = any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "RANK", "NODE_RANK"))
    if at is None:
        # a new run into a used folder is refused here, before Hydra overwrites that run's .hydra/
        for arg in argv[1:] if not launched else []:
            if arg.startswith("hydra.run.dir="):
                run_dir = Path(arg.split("=", 1)[1]).expanduser()
                lock_run_dir(run_dir)
                check_fresh_run_dir(run_dir)
        return argv
    value = argv[at].split("=", 1)[1]
    run_dir = Path(value).expanduser()
    if value in ("", "null", "None") or not run_dir.is_dir():  # Path("") is ".": the raw text decides
        return argv  # train() refuses a resume folder that is not there, naming it
    if not launched:
        lock_run_dir(run_dir)
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    saved = read_saved_overrides(saved_file) if saved_file.exists() else []
    given = {override_key(a) for a in argv[1:] if "=" in a or a.startswith("~")}
    from narm_lightning.config.keys import known_keys  # the schema's dotted keys

    keys, groups = frozenset(known_keys()), config_groups()
    # a sweep trial's folder resumed by hand: no longer that trial (it has failed), so it reports to none
    kept = [a for a in saved if replayable(a, keys, groups)]
    dropped = [a for a in saved if a not in kept and not override_key(a).startswith(("optuna.", "hydra.run.dir"))]
    if dropped:
        print(f"resume: not replayed from {saved_file} (only the run's config keys and group options are): "
              + ", ".join(repr(a[:80]) for a in dropped), file=sys.stderr)
    replay = [a for a in kept if override_key(a) not in given]
    hydra_args = [] if "hydra.run.dir" in given else [f"hydra.run.dir={run_dir}"]
    # keep the run's own .hydra/ as it was: a refused resume must not overwrite the overrides replayed here
    hydra_args += [] if "hydra.output_subdir" in given else ["hydra.output_subdir=null"]
    return [*argv[: at + 1], *replay, *hydra_args, *argv[at + 1:]]


def resume_paths(resume: str | Path) -> tuple[Path, Path]:
    """``(run dir, its last.ckpt)``, or a ``ConfigError`` saying what is missing."""
    run_dir = Path(resume).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"resume={resume!s}: not a folder; expected the run folder of an earlier run "
                          "(holding config.yaml and checkpoints/last.ckpt).")
    for needed in ("config.yaml", LAST_CHECKPOINT):
        if not (run_dir / needed).is_file():
            raise ConfigError(f"resume={resume!s}: {run_dir / needed} is missing; expected the run folder of an "
                              "earlier run that saved at least one epoch.")
    return run_dir, run_dir / LAST_CHECKPOINT
