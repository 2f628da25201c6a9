"""Read the weights out of a RecBole ``saved/NARM-*.pth`` without running anything it pickles.

RecBole pickles its ``Config`` object, enums, numpy scalars and a YAML loader class beside the tensors,
so ``torch.load(weights_only=True)`` refuses the file. Here exactly those names resolve to an inert
stand-in (never imported, never called), torch's tensor rebuilders resolve for real, and any other name
in the file is refused (``safe_load``): a RecBole checkpoint never holds ``os.system``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from narm_lightning.errors import DataError
from narm_lightning.safe_load import load_torch_restricted


class _Inert(dict):
    """Stands in for an allowed RecBole/numpy/yaml class: accepts its arguments and state, does nothing."""

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


# Every name a RecBole 1.x NARM checkpoint pickles besides tensors (read from the shared RecBole 1.2.1
# checkpoint with pickletools), each an inert stand-in. numpy 2 renamed numpy.core to numpy._core.
_RECBOLE_NAMES = (
    ("recbole.config.configurator", "Config"),
    ("recbole.model.sequential_recommender.narm", "NARM"),
    ("recbole.utils.enum_type", "EvaluatorType"),
    ("recbole.utils.enum_type", "InputType"),
    ("recbole.utils.enum_type", "ModelType"),
    ("recbole.utils.enum_type", "FeatureType"),
    ("recbole.utils.enum_type", "FeatureSource"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("yaml.loader", "FullLoader"),
    ("_codecs", "encode"),
)
INERT: dict[tuple[str, str], Any] = {name: _Inert for name in _RECBOLE_NAMES}


def load_recbole_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` tensors of a RecBole checkpoint, loaded without executing pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: RecBole checkpoint not found (expected a saved/NARM-*.pth file).")
    payload = load_torch_restricted(path, INERT, "torch checkpoint (a RecBole saved/NARM-*.pth)")
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: has no 'state_dict' of tensors; expected a checkpoint saved by RecBole.")
    return dict(state)
