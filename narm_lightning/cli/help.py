"""``--help`` of the command-line programs, generated from the schema (``narm_lightning.config.schema``): every key's
default, choices and one-line help are declared there once, so help can never drift from what the program
checks. The leading comment of the shipped YAML says what the program does; its ``defaults:`` comments name
the config groups (a group is a choice of file, not a key). Import-light: no torch, no Lightning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from narm_lightning import CONF_DIR
from narm_lightning.config.data_schema import AtomicDataConfig, ClicksDataConfig, DataConfig, SessionDataConfig
from narm_lightning.config.rules import BOOLEAN, Key, keys_of, nested_schemas
from narm_lightning.config.schema import LOGGERS, TrainConfig
from narm_lightning.config.serving import ExportConfig, RecommendConfig

_GROUP = re.compile(r"^  - (?P<group>[\w/]+): (?P<option>\S+)\s*#\s*(?P<help>.*)$")
Row = tuple[str, str, str]  # (key, default as typed on a command line, one-line help)


def header_and_groups(path: Path) -> tuple[list[str], list[Row]]:
    """The leading comment lines of a YAML file, and its commented ``defaults:`` group entries."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [line.lstrip("# ").rstrip() for line in lines[: next(
        (i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]]
    groups = [(m["group"], m["option"], m["help"].strip()) for m in map(_GROUP.match, lines) if m]
    return header, groups


def shown(value: Any) -> str:
    """A default as one would type it on the command line (``null``, ``[10]``, ``false``)."""
    if isinstance(value, str) and value != "???":
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def rows(keys: Iterable[Key], prefix: str = "", values: dict[str, Any] | None = None) -> list[Row]:
    """Help rows of ``keys``; ``values`` replaces the schema's default where a YAML sets another."""
    out = []
    for k in keys:
        if k.hidden:
            continue
        text = k.help
        choices = [c for c in k.rule.choices if c is not None] if k.rule and k.rule is not BOOLEAN else []
        if choices and not all(str(c) in text for c in choices):
            text += f" ({' | '.join(shown(c) for c in k.rule.choices)})"
        value = (values or {}).get(k.name, k.default)
        out.append((prefix + k.name, shown(value), text))
    return out


def schema_rows(schema: type, prefix: str = "") -> list[Row]:
    """The rows of a schema and of the schemas nested in it (``model.*``, ``trainer.*``)."""
    out = rows(keys_of(schema), prefix)
    for name, nested in nested_schemas(schema):
        out += schema_rows(nested, f"{prefix}{name}.")
    return out


def _table(rows_: list[Row], sep: str = "=") -> list[str]:
    width = min(max((len(k) + len(v) + 1 for k, v, _ in rows_), default=0), 40)
    out = []
    for key, value, text in rows_:
        cell = f"{key}{sep}{value}" if value else key
        out.append(f"  {cell:<{width}}  {text}" if len(cell) <= width else f"  {cell}\n  {'':<{width}}  {text}")
    return out


def session_rows(schema: type = SessionDataConfig) -> list[Row]:
    """The data keys a session dataset (or a click log) has instead of the atomic file's (its own ``format`` and
    ``dataset`` too)."""
    base = {k.name for k in keys_of(DataConfig)}
    return rows([k for k in keys_of(schema) if k.name not in base or k.name in ("format", "dataset")], "data.")


def logger_rows() -> list[Row]:
    return [row for name, schema in LOGGERS.items() for row in rows(keys_of(schema), f"logger.{name}.")]


def train_sections() -> list[str]:
    header, groups = header_and_groups(CONF_DIR / "train.yaml")
    return [
        *header,
        "", "Config groups (group=option; the default shown):", *_table(groups),
        "", "Keys (key=value; declared in narm_lightning/config/):",
        *_table(schema_rows(TrainConfig) + rows(keys_of(AtomicDataConfig), "data.")),
        "", "Session datasets (data=diginetica, yoochoose1_64, yoochoose1_4) take these data keys instead of the "
        "atomic file's fields:", *_table(session_rows()),
        "", "Your own click log (data=clicks data.path=FILE; docs/your-data.md) takes these instead:",
        *_table(session_rows(ClicksDataConfig)),
        "", "Loggers (logger=[wandb,csv,...]; each option's keys):", *_table(logger_rows()),
    ]


def sweep_sections() -> list[str]:
    from narm_lightning.sweeping.config import PRUNERS, SAMPLERS, OptunaSweeperConfig

    header, _ = header_and_groups(CONF_DIR / "sweep.yaml")
    set_here = yaml.safe_load((CONF_DIR / "sweep.yaml").read_text(encoding="utf-8"))["hydra"]["sweeper"]
    values = {k: v for k, v in set_here.items() if not isinstance(v, dict)}
    presets = []
    for path in sorted((CONF_DIR / "search").glob("*.yaml")):
        space = yaml.safe_load(path.read_text(encoding="utf-8")).get("params") or {}
        presets.append((f"search={path.stem}", "", " ".join(f"{k}={v}" for k, v in space.items())))
    choices = [(f"hydra/sweeper/{kind}={name}", "", (node.__doc__ or "").split("\n")[0].replace("``", ""))
               for kind, options in (("sampler", SAMPLERS), ("pruner", PRUNERS)) for name, node in options.items()]
    return [*header, "", "Sweeper keys (hydra.sweeper.key=value; declared in narm_lightning/sweeping/config.py):",
            *_table(rows(keys_of(OptunaSweeperConfig), "hydra.sweeper.", values)),
            "", "Samplers (default grid) and pruners (default nop):", *_table(choices),
            "", "The search space: key=a,b,c / range(1,4) / interval(0.1,1) / tag(log,interval(1e-4,1e-1)) on the "
            "command line sweeps exactly those keys; with none, the preset (conf/search/):", *_table(presets),
            "", "Every training key applies to each trial:"]


def serving_sections(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        schema = {"recommend": RecommendConfig, "export": ExportConfig}[name]
        header, _ = header_and_groups(CONF_DIR / f"{name}.yaml")
        out += [*(out and [""]), *header, "", "Keys (key=value; declared in narm_lightning/config/):",
                *_table(rows(keys_of(schema)))]
    return out


def usage(program: str, sections: list[str], examples: list[str]) -> str:
    """The whole ``--help`` text of one program: what it does, its groups, its keys, examples."""
    return "\n".join([*sections, "", "Examples:", *(f"  {e}" for e in examples), "",
                      f"{program} --hydra-help shows Hydra's own flags (--cfg job, --info, ...)."])


def print_help_if_asked(argv: list[str], program: str, sections: Any, examples: list[str]) -> None:
    """``-h`` / ``--help`` anywhere on the command line: print the usage and exit 0 (before Hydra starts).

    ``sections`` is called only then: building the text reads the YAML files."""
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(usage(program, sections(), examples))
        raise SystemExit(0)


def _md(rows_: list[Row]) -> list[str]:
    cell = lambda s: s.replace("|", "\\|")  # noqa: E731 - a table cell
    return ["| key | default | meaning |", "|---|---|---|",
            *(f"| `{k}` | `{cell(v)}` | {cell(text)} |" for k, v, text in rows_)]


def markdown() -> str:
    """``docs/keys.md``: every key of every program, from the schema (``make docs``; a test keeps it current)."""
    from narm_lightning.sweeping.config import OptunaSweeperConfig

    sweep_values = yaml.safe_load((CONF_DIR / "sweep.yaml").read_text(encoding="utf-8"))["hydra"]["sweeper"]
    parts = [
        "# Every key", "",
        "Generated from `narm_lightning/config/schema.py`, `data_schema.py` and `narm_lightning/sweeping/config.py` "
        "by `make docs` (a test fails when it is out of date); `narm-train --help` prints the same.", "",
        "## Training (`narm-train`, each sweep trial)", "", *_md(schema_rows(TrainConfig)), "",
        "## Data: an atomic file (`data=ml-100k`)", "", *_md(rows(keys_of(AtomicDataConfig), "data.")), "",
        "## Data: session datasets (`data=diginetica`, `yoochoose1_64`, `yoochoose1_4`), instead of the atomic "
        "file's fields", "", *_md(session_rows()), "",
        "## Data: your own click log (`data=clicks`, [guide](your-data.md)), instead of the atomic file's fields", "",
        *_md(session_rows(ClicksDataConfig)), "",
        "## Loggers (`logger=[wandb,csv,tensorboard]`)", "", *_md(logger_rows()), "",
        "## Sweeps (`narm-sweep -m`): `hydra.sweeper.*`", "",
        *_md(rows(keys_of(OptunaSweeperConfig), "hydra.sweeper.",
                  {k: v for k, v in sweep_values.items() if not isinstance(v, dict)})), "",
        "## Serving (`narm-recommend`)", "", *_md(rows(keys_of(RecommendConfig))), "",
        "## Export (`narm-recommend export`)", "", *_md(rows(keys_of(ExportConfig))), "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
