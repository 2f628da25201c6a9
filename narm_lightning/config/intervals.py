"""RecBole's interval strings (``"[5,inf)"``, several joined by ``;``): parsed here, where the config rules check
them, and applied by ``data/filters.py``. Plain Python: the config knows nothing of numpy or the readers."""

from __future__ import annotations

import math

Interval = tuple[str, float, float, str]


def parse_intervals(text: str) -> list[Interval]:
    """``"[5,inf)"`` or ``"(0,1];[3,4)"`` -> endpoint tuples; ``ValueError`` naming what is wrong (RecBole
    only warns and skips a bad one: a filter that silently does nothing is refused here instead)."""
    out = []
    for part in str(text).split(";"):
        part = part.strip()
        ends = part[1:-1].split(",") if len(part) >= 2 else []
        if len(ends) != 2 or part[0] not in "([" or part[-1] not in ")]":
            raise ValueError(f"{part!r} is not an interval like [5,inf) or (0,1]")
        try:
            low, high = float(ends[0]), float(ends[1])
        except ValueError:
            raise ValueError(f"{part!r}: the ends must be numbers (or inf)") from None
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"{part!r}: the left end must not exceed the right one")
        out.append((part[0], low, high, part[-1]))
    return out
