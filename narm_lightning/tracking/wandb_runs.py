"""The life of one W&B run: offline unless asked otherwise, opened on its own, finished with a state.

Shared by the training logger (one run per training) and the sweep (one run per trial plus a summary run).
``wandb`` is imported lazily so that ``logger=none`` never loads it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from narm_lightning.config.rules import keys_of
from narm_lightning.config.schema import WANDB_MODES, WandbConfig
from narm_lightning.errors import ConfigError

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

MODES = WANDB_MODES
STATES = ("complete", "pruned", "failed")
KEYS = tuple(k.name for k in keys_of(WandbConfig))  # declared once, in the schema; anything else is a typo


def resolve_mode(mode: str | None) -> str | None:
    """``mode`` if set; else offline unless the environment asks for W&B (``WANDB_MODE`` or ``WANDB_API_KEY``).

    ``None`` means "let wandb read ``WANDB_MODE``"; no account and no network are ever needed by default.
    """
    if mode is not None:
        if mode not in MODES:
            raise ConfigError(f"logger.wandb.mode={mode!r} is not a W&B mode; expected null, {', '.join(MODES)}.")
        return mode
    if os.environ.get("WANDB_MODE"):
        return None
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    return "offline"


def check_credentials(options: Mapping[str, Any]) -> None:
    """Online W&B needs an API key: refuse before anything is read or written (wandb would raise ``UsageError``
    from inside the first epoch, leaving a run folder with a config and no results).

    Looked for where wandb looks: ``WANDB_API_KEY``, an identity token file, or the netrc entry ``wandb login``
    writes for the W&B host (``WANDB_BASE_URL``, default api.wandb.ai)."""
    if resolve_mode(options.get("mode")) != "online":
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return
    raise ConfigError(
        f"logger.wandb.mode is 'online' but no W&B API key is configured for {host} (WANDB_API_KEY, or the netrc "
        "entry `wandb login` writes); run `wandb login` first, or leave the mode offline (the default) and upload "
        "the run later with `wandb sync <run dir>/wandb`."
    )


def check_options(options: Mapping[str, Any]) -> None:
    """One paragraph for a misspelled key or a malformed ``tags`` (Hydra does not see keys set by code)."""
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ConfigError(f"logger.wandb has unknown key(s) {unknown}; expected some of {list(KEYS)}.")
    tags = options.get("tags") or []
    if isinstance(tags, str) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"logger.wandb.tags={tags!r} must be a list of strings, e.g. [baseline,ml-100k].")


def run_id(name: str | None) -> str | None:
    """A W&B run id that starts with the run's name (``trial-3-1f0c9a2e``).

    wandb names a run's folder ``offline-run-<time>-<id>`` and ``wandb leet`` lists runs by folder, so an id that
    carries the name is the only way the list shows ``trial-3`` rather than 8 random characters. The random tail
    keeps ids unique within a project (W&B's requirement); W&B allows letters, digits, ``-`` and ``_``."""
    if not name:
        return None
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:48]
    return f"{stem}-{secrets.token_hex(4)}" if stem else None


def open_run(
    options: Mapping[str, Any],
    default_dir: Path,
    *,
    job_type: str,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> Run:
    """A new W&B run from ``logger.wandb`` options; ``name``/``group`` apply where the options leave them null.

    ``reinit="create_new"`` makes it a run of its own even if another is active in the process (it never
    silently appends to someone else's run); the caller finishes it with :func:`finish_run`.
    """
    import wandb

    check_options(options)
    check_credentials(options)
    run_dir = Path(options.get("dir") or default_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode = resolve_mode(options.get("mode"))
    return wandb.init(
        mode=mode,
        # offline, W&B's four-line banner says nothing the finish line (sync / leet commands) does not
        settings=wandb.Settings(silent=True) if (mode or os.environ.get("WANDB_MODE")) == "offline" else None,
        project=options.get("project") or "narm-lightning",
        entity=options.get("entity"),
        group=options.get("group") or group,
        name=options.get("name") or name,
        id=run_id(options.get("name") or name),
        tags=[*(options.get("tags") or []), *tags],
        job_type=job_type,
        dir=str(run_dir),
        config=dict(config or {}),
        reinit="create_new",
    )


def finish_run(run: Run, state: str) -> None:
    """Tag the run with ``state`` (complete / pruned / failed) and finish it; failed runs exit non-zero.

    Prints the ``wandb sync`` command of an offline run, so uploading later is one copy-paste away.
    """
    if state not in STATES:
        raise ValueError(f"run state {state!r} is not one of {STATES}")
    try:
        run.tags = (*[t for t in run.tags if t not in STATES], state)
    finally:
        offline = run.settings.mode == "offline"
        sync_dir = Path(run.settings.sync_dir).resolve()
        run.finish(exit_code=1 if state == "failed" else 0)
    if offline:
        print(f"W&B offline run ({state}): upload with `wandb sync {sync_dir}`, browse with `wandb leet {sync_dir}`")


def state_of(exc: BaseException | None) -> str:
    """The run state a training or trial ended in: pruned for ``optuna.TrialPruned``, failed for any other error."""
    if exc is None:
        return "complete"
    import optuna

    return "pruned" if isinstance(exc, optuna.TrialPruned) else "failed"
