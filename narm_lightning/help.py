"""``--help`` of the command-line programs, generated from the shipped YAML: its leading comment lines say
what the program does, and every key's inline comment is its one-line help, so help is declared once (in
the config the program runs) and can never drift from it."""

from __future__ import annotations

import re
from pathlib import Path

from narm_lightning import CONF_DIR

_KEY = re.compile(r"^(?P<indent> *)(?P<item>- )?(?P<key>[A-Za-z_][\w.@/-]*):(?P<value>[^#]*?)\s*(?:#\s*(?P<help>.*))?$")
Key = tuple[str, str, str]  # (dotted key, default, one-line help)


def documented_keys(path: Path, prefix: str = "") -> tuple[list[str], list[Key], list[Key]]:
    """``(header lines, keys, config groups)`` of one YAML file, in file order.

    Keys without an inline comment (containers, internals) are left out; ``defaults:`` entries are the
    config groups, with their default option.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").rstrip())
    keys: list[Key] = []
    groups: list[Key] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in lines[len(header):]:
        match = _KEY.match(line)
        if not match:
            continue
        indent, key, value = len(match["indent"]), match["key"], match["value"].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        if not value and not match["item"]:
            stack.append((indent, key))
        if parents == ["defaults"]:
            if match["help"] and not key.startswith("override"):
                groups.append((key, value, match["help"].strip()))
        elif match["help"]:
            keys.append((prefix + ".".join([*parents, key]), value, match["help"].strip()))
    return header, keys, groups


def _table(rows: list[Key], sep: str) -> list[str]:
    width = min(max((len(k) + len(v) + 1 for k, v, _ in rows), default=0), 40)
    out = []
    for key, value, text in rows:
        shown = f"{key}{sep}{value}" if value else key
        out.append(f"  {shown:<{width}}  {text}" if len(shown) <= width else f"  {shown}\n  {'':<{width}}  {text}")
    return out


HIDDEN = ("optuna.",)  # keys the sweeper sets for each trial: not for users


def usage(program: str, config_names: list[str], examples: list[str]) -> str:
    """The whole ``--help`` text of one program: what it does, its groups, its keys, examples."""
    out: list[str] = []
    for name in config_names:
        header, keys, groups = documented_keys(CONF_DIR / f"{name}.yaml")
        out += header
        if groups:
            out += ["", "Config groups (group=option; the default shown):", *_table(groups, "=")]
        for group, option, _ in groups:  # the keys of each group's default option, e.g. model.hidden_size
            file = CONF_DIR / group / f"{option}.yaml"
            if option and file.is_file():
                keys += documented_keys(file, prefix=f"{group}.")[1]
        shown = [k for k in keys if not k[0].startswith(HIDDEN) and k[0] != HIDDEN[0].rstrip(".")]
        out += ["", f"Keys (key=value; every key with its comment: {CONF_DIR / name}.yaml and its groups):",
                *_table(shown, "="), ""]
    out += ["Examples:", *(f"  {e}" for e in examples), "",
            f"{program} --hydra-help shows Hydra's own flags (--cfg job, --info, ...)."]
    return "\n".join(out)


def print_help_if_asked(argv: list[str], program: str, config_names: list[str], examples: list[str]) -> None:
    """``-h`` / ``--help`` anywhere on the command line: print the usage and exit 0 (before Hydra starts)."""
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(usage(program, config_names, examples))
        raise SystemExit(0)
