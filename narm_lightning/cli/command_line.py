"""What a user types, made into what Hydra composes: the numeric option names of config groups.

``hidden_size=256``, ``n_layers=2`` and ``n_layers=1,2`` name options of the ``hidden_size`` and ``n_layers``
groups (``conf/hidden_size/256.yaml``), but Hydra's grammar reads ``256`` as an int and its defaults list accepts
only strings as group choices ("Config group override must be a string or a list. Got int", a traceback).
Hydra has no hook for this (its grammar types values before it knows which are groups), so the programs quote
the numbers of group overrides before Hydra reads the command line: ``hidden_size='256'``. Every other
argument, and anything that does not parse, is passed on as typed (Hydra's own message then names it).
"""

from __future__ import annotations

from collections.abc import Collection

_PREFIXES = {"ADD": "+", "FORCE_ADD": "++", "CHANGE": ""}


def config_groups() -> dict[str, set[str]]:
    """The shipped config groups and their options (``conf/<group>/<option>.yaml``), ``hydra/`` aside."""
    from narm_lightning import CONF_DIR  # read at call time: tests point it elsewhere

    return {d.name: {f.stem for f in d.glob("*.yaml")} for d in CONF_DIR.iterdir()
            if d.is_dir() and d.name not in ("hydra", "__pycache__")}


def override_key(arg: str) -> str:
    """The key or group an override names: ``+model.x=1`` -> ``model.x``, ``data@p=ml-100k`` -> ``data``."""
    return arg.lstrip("+~").split("=", 1)[0].split("@", 1)[0]


def _quoted(value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "'" + str(value) + "'"


def quote_group_numbers(argv: list[str], groups: Collection[str] | None = None, *, sweeps: bool = True
                        ) -> list[str]:
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
        if arg.startswith("-") or "=" not in arg or override_key(arg) not in groups:
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
