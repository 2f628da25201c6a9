"""Reading YAML that came from outside (a RecBole config file, a run folder's ``config.yaml`` and
``overrides.yaml``, a ``hyper.test`` line) so that it stays data.

PyYAML's safe loader builds no objects, but two things remain that a file must not do to us:

* **grow out of proportion to its size**: aliases share one node, so a 1 KB "billion laughs" file is a
  graph of 10^9 leaves that OmegaConf (which copies every value) walks for minutes. The composed graph is
  measured first, each shared node counted as often as it is reached (memoised, so the count is linear in
  the file), and refused above ``MAX_NODES``;
* **reach the environment or run a resolver**: once merged into a config, a string ``${oc.env:TOKEN}`` is
  an OmegaConf interpolation, resolved when the config is saved or printed (the secret then lands in
  ``config.yaml``, the W&B run and the logs), and ``${now:}`` / ``${hydra:}`` read the process's state.
  No file we read has a reason to hold one (a run's saved config is written resolved), so any ``${`` is
  refused, naming the key.

OmegaConf offers neither check, and PyYAML's own limits are on document size, not alias expansion: hence
this small reader.
"""

from __future__ import annotations

from typing import Any

import yaml

from narm_lightning.errors import ConfigError

MAX_NODES = 200_000  # far above any config (ours: ~200 values); a billion-laughs file of a few levels is above
MAX_DEPTH = 100  # nesting; PyYAML composes recursively and a deeper file would end in RecursionError


def load_yaml_data(text: str, where: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader,
                   error: type[Exception] = ConfigError, interpolations: bool = False) -> Any:
    """The plain data of one YAML document, or ``error`` naming ``where`` and what is wrong.

    Refused: invalid YAML, aliases that expand to more than ``MAX_NODES`` values, nesting deeper than
    ``MAX_DEPTH``, and any string (key or value) that holds an OmegaConf interpolation ``${...}``, unless
    ``interpolations`` (a caller that screens each string itself, as ``resume=`` does its overrides).
    """
    try:
        reader = loader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML ({' '.join(str(exc).split())}).") from None
    try:
        try:
            node = reader.get_single_node()
        except RecursionError:
            raise error(f"{where}: nested deeper than {MAX_DEPTH} levels; expected a config file.") from None
        except yaml.YAMLError as exc:
            raise error(f"{where}: not valid YAML ({' '.join(str(exc).split())}).") from None
        if node is None:
            return None
        size = _expanded_size(node, where, error)
        if size > MAX_NODES:
            raise error(f"{where}: its aliases expand to more than {MAX_NODES:,} values (a file of "
                        f"{len(text):,} characters); refused before reading it. Write the values out, or use "
                        "fewer aliases.")
        try:
            data = reader.construct_document(node)
        except yaml.YAMLError as exc:
            raise error(f"{where}: not valid YAML ({' '.join(str(exc).split())}).") from None
    finally:
        reader.dispose()
    if not interpolations:
        refuse_interpolations(data, where, error)
    return data


def _expanded_size(root: yaml.Node, where: str, error: type[Exception]) -> int:
    """How many values the document has once every alias is expanded (memoised: linear in the file)."""
    sizes: dict[int, int] = {}
    # iterative post-order walk: (node, depth, children done?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        if id(node) in sizes and not done:
            continue
        children = _children(node)
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        if depth > MAX_DEPTH:
            raise error(f"{where}: nested deeper than {MAX_DEPTH} levels; expected a config file.")
        if id(node) in on_path:
            raise error(f"{where}: an alias refers to a value that contains it (a recursive YAML structure); "
                        "expected plain values.")
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def refuse_interpolations(data: Any, where: str, error: type[Exception] = ConfigError, key: str = "") -> None:
    """``error`` if any string in ``data`` (keys included) holds ``${``: an OmegaConf interpolation or resolver
    (``${oc.env:...}`` reads the environment) that would be resolved once the data is in a config."""
    if isinstance(data, dict):
        for k, value in data.items():
            name = f"{key}.{k}" if key else str(k)
            if isinstance(k, str) and "${" in k:
                raise error(_interpolation_message(where, name, k))
            refuse_interpolations(value, where, error, name)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            refuse_interpolations(value, where, error, f"{key}[{i}]")
    elif isinstance(data, str) and "${" in data:
        raise error(_interpolation_message(where, key or "the document", data))


def _interpolation_message(where: str, key: str, value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return (f"{where}: {key} holds {shown!r}, an OmegaConf interpolation (${{...}}: it could read environment "
            "variables or the program's state); files read here hold plain values only. Write the value out.")
