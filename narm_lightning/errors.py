"""The project's own exceptions: one family, so entry points can turn them into one-paragraph messages."""

from __future__ import annotations


class NarmError(Exception):
    """Base class for every error the user can fix (bad config, bad data)."""


class ConfigError(NarmError, ValueError):
    """A config key has a value we cannot run with. The message names the key and what was expected."""


class DataError(NarmError, ValueError):
    """A data file is missing or malformed. The message names the file, the line and what was expected."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception: third-party messages run to pages, a user needs the gist."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:limit]}"
