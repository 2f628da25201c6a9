"""A small validation library: a rule (one phrase, one predicate), a key (default, help, rule) declared once on a
dataclass field, and reading a schema's keys back (help, checks, defaults). Import-light: no torch."""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

REQUIRED = "???"  # OmegaConf's mark of a value each option must set


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_list(value: Any) -> bool:
    """A YAML/OmegaConf list (``ListConfig`` is a ``Sequence``), never a string."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


@dataclass(frozen=True)
class Rule:
    """``expect`` completes "<key> is <value>; expected ..."; ``choices`` are listed by ``--help``."""

    expect: str
    ok: Callable[[Any], bool]
    choices: tuple[Any, ...] = ()


def integer(minimum: int = 1, maximum: int | None = None, expect: str | None = None) -> Rule:
    words = {1: "a positive integer", 0: "an integer >= 0"}.get(minimum, f"an integer >= {minimum}")
    if maximum is not None:
        words = f"an integer in [{minimum}, {maximum}]"
    return Rule(expect or words, lambda v: is_int(v) and v >= minimum and (maximum is None or v <= maximum))


def number(above: float | None = None, at_least: float | None = None, below: float | None = None,
           expect: str = "a number", at_most: float | None = None) -> Rule:
    def ok(v: Any) -> bool:
        return (is_number(v) and (above is None or v > above) and (at_least is None or v >= at_least)
                and (below is None or v < below) and (at_most is None or v <= at_most))
    return Rule(expect, ok)


def one_of(choices: Sequence[Any], *, fold_case: bool = False) -> Rule:
    shown = ", ".join("null" if c is None else str(c) for c in choices)
    if fold_case:
        return Rule(f"one of {shown}", lambda v: isinstance(v, str) and v.lower() in choices, tuple(choices))
    return Rule(f"one of {shown}", lambda v: any(v == c and type(v) is type(c) for c in choices), tuple(choices))


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool), (True, False))


TEXT = Rule("a non-empty string", is_text)


def key(default: Any, help: str, rule: Rule | None = None, *, hidden: bool = False) -> Any:  # noqa: A002
    """One config key: its default, its one-line help and (beyond its type) its rule."""
    meta = {"help": help, "rule": rule, "hidden": hidden}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def defaults_of(schema: type) -> dict[str, Any]:
    """The schema's defaults as a plain mapping (``???`` for a key each option must set)."""
    out = {}
    for f in fields(schema):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            value = "???"
        out[f.name] = asdict(value) if is_dataclass(value) else value
    return out


def _optional(annotation: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``X | None``; ``(False, annotation)`` otherwise."""
    args = typing.get_args(annotation)
    if (typing.get_origin(annotation) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, rest[0] if len(rest) == 1 else Any
    return False, annotation


def _type_check(annotation: Any) -> tuple[str, Callable[[Any], bool]] | None:
    if annotation in _TYPES:
        return _TYPES[annotation]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        words, ok = _TYPES[item]
        return f"a list of {words.split(' ', 1)[1]}s", lambda v: is_list(v) and all(ok(x) for x in v)
    return None  # Any, or a nested schema


@dataclass(frozen=True)
class Key:
    """One declared key, as ``--help`` and the checks read it."""

    name: str
    default: Any
    help: str
    rule: Rule | None
    optional: bool
    annotation: Any
    hidden: bool

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is valid, else what was expected."""
        if value is None and self.optional:
            return None
        checked = _type_check(self.annotation)
        expect = self.rule.expect if self.rule else (checked[0] if checked else "")
        if self.optional and not expect.startswith("null") and not (self.rule and None in self.rule.choices):
            expect = f"null or {expect}"
        if checked and not checked[1](value):
            return expect
        if self.rule and not self.rule.ok(value):
            return expect
        return None


def keys_of(schema: type) -> Iterator[Key]:
    """The keys of one schema class, in declaration order (nested schemas not expanded)."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        if is_dataclass(hints[f.name]) or not f.metadata:
            continue
        optional, annotation = _optional(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "???")
        yield Key(f.name, default, f.metadata["help"], f.metadata["rule"], optional, annotation,
                  f.metadata["hidden"])


def nested_schemas(schema: type) -> Iterator[tuple[str, type]]:
    """``(field name, schema)`` of the schemas nested in ``schema`` (TrainConfig's model, trainer, optuna)."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        if is_dataclass(hints[f.name]):
            yield f.name, hints[f.name]


def schema_problems(node: Any, schema: type, prefix: str = "") -> list[str]:
    """What the schema says of each key of ``node`` (type, range, choices), one sentence a key."""
    problems = []
    for key in keys_of(schema):
        value = node.get(key.name) if isinstance(node, Mapping) else None
        expected = key.problem(value)
        if expected:
            problems.append(f"{prefix}{key.name} is {value!r}; expected {expected}")
    for name, nested in nested_schemas(schema):
        problems += schema_problems(node.get(name) or {}, nested, f"{prefix}{name}.")
    return problems


def undeclared_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """The keys of ``node`` that ``schema`` does not declare (a ``+key`` nothing reads), nested schemas followed."""
    if not isinstance(node, Mapping):
        return []
    declared = {f.name for f in fields(schema)}
    extra = [f"{prefix}{name}" for name in node if name not in declared]
    for name, nested in nested_schemas(schema):
        extra += undeclared_keys(node.get(name) or {}, nested, f"{prefix}{name}.")
    return extra


_TYPES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    int: ("an integer", is_int),
    float: ("a number", is_number),
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
}
