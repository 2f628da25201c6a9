"""What a user types, made into what Hydra composes: the numeric option names of config groups.

``hidden_size=256``, ``n_layers=2`` and ``n_layers=1,2`` name options of the ``hidden_size`` and ``n_layers``
groups (``conf/hidden_size/256.yaml``), but Hydra's grammar reads ``256`` as an int and its defaults list accepts
only strings as group choices ("Config group override must be a string or a list. Got int", a traceback).
Hydra has no hook for this (its grammar types values before it knows which are groups), so the programs quote
the numbers of group overrides before Hydra reads the command line: ``hidden_size='256'``. Every other
argument, and anything that does not parse, is passed on as typed (Hydra's own message then names it).
"""

from __future__ import annotations

from pathlib import Path

from narm_lightning import CONF_DIR

_PREFIXES = {"ADD": "+", "FORCE_ADD": "++", "CHANGE": ""}


def config_groups(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """The shipped config groups (folders of option files), e.g. ``hidden_size``, ``data``, ``hydra/launcher``."""
    return frozenset(str(p.parent.relative_to(conf_dir)) for p in conf_dir.rglob("*.yaml")
                     if p.parent != conf_dir)


def _quoted(value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "'" + str(value) + "'"


def quote_group_numbers(argv: list[str], groups: frozenset[str] | None = None, *, sweeps: bool = True) -> list[str]:
    """``argv`` with each group override's numeric option names quoted (``n_layers=1,2`` -> ``n_layers='1','2'``);
    ``argv[0]`` and flags are kept as they are. ``sweeps=False`` leaves sweeps (``1,2``, ``range``) as typed: the
    sweeper reads those itself, and a study's identity holds the values as they were typed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, QuotedString, RangeSweep
    from hydra.errors import HydraException

    groups = config_groups() if groups is None else groups
    parser = OverridesParser.create()
    out = list(argv[:1])
    for arg in argv[1:]:
        key = arg.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if arg.startswith("-") or "=" not in arg or key not in groups:
            out.append(arg)
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:
            out.append(arg)
            continue
        value, prefix = override.value(), _PREFIXES.get(override.type.name)
        if override.is_sweep_override() and not sweeps:
            out.append(arg)
            continue
        if isinstance(value, RangeSweep):
            values = list(override.sweep_iterator())
        elif isinstance(value, ChoiceSweep) and not value.tags:
            values = list(value.list)
        elif isinstance(value, list):  # several options of one group (logger=[wandb,csv])
            values = value
        else:
            values = [value]
        values = [v.text if isinstance(v, QuotedString) else v for v in values]
        if prefix is None or not any(isinstance(v, (int, float)) for v in values):
            out.append(arg)
            continue
        if not all(isinstance(v, (int, float)) or (isinstance(v, str) and "'" not in v) for v in values):
            out.append(arg)  # a list, a dict, an interval: Hydra's own message names it
            continue
        text = ",".join(_quoted(v) for v in values)
        text = f"[{text}]" if isinstance(value, list) else text
        package = f"@{override.package}" if override.package is not None else ""
        out.append(f"{prefix}{override.key_or_group}{package}={text}")
    return out
