"""Read the weights out of a RecBole ``saved/NARM-*.pth`` without running anything it pickles.

RecBole pickles its ``Config`` object, enums, numpy scalars and a YAML loader class beside the tensors,
so ``torch.load(weights_only=True)`` refuses the file and an unrestricted load would import and call
whatever those records name. Here every class other than torch's own tensor rebuilders resolves to an
inert placeholder: the pickle is walked, the tensors are rebuilt, nothing else is imported or called.
"""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch

from narm_lightning.errors import DataError

# The only callables a RecBole checkpoint may reach: torch's tensor rebuilding and ordered dicts.
_TRUSTED = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
}


class _Inert(dict):
    """Stands in for any class the pickle names: accepts its arguments and state, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return dict.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def append(self, item: Any) -> None:
        return None

    def extend(self, items: Any) -> None:
        return None


class _RefusingUnpickler(pickle.Unpickler):
    """Resolves trusted torch rebuilders for real; every other global becomes ``_Inert``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TRUSTED:
            return collections.OrderedDict if module == "collections" else getattr(torch._utils, name)
        return _Inert


_restricted_pickle = types.ModuleType("narm_restricted_pickle")
_restricted_pickle.Unpickler = _RefusingUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = pickle.load  # type: ignore[attr-defined]
_restricted_pickle.__name__ = "pickle"


def load_recbole_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` tensors of a RecBole checkpoint, loaded without executing pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: RecBole checkpoint not found (expected a saved/NARM-*.pth file).")
    try:
        payload = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a bad file for the user
        raise DataError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc}).") from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: has no 'state_dict' of tensors; expected a checkpoint saved by RecBole.")
    return dict(state)
