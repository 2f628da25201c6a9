"""Serving a trained NARM: ``Recommender`` (top-K in original item ids), ``export`` (TorchScript, ONNX) and the
``narm-recommend`` command line. Plain torch: nothing here imports Lightning, and nothing here is imported by
training. The command line imports the rest, never the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from narm_lightning.serving.recommender import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender"]


def __getattr__(name: str) -> Any:
    """The two classes on first use. Why lazy: ``python -m narm_lightning.serving`` imports this package before
    its ``__main__``, and torch imported here would load before the program's Ctrl-C handling exists
    (``cli/entry.py``): Ctrl-C in that second was a page of import frames."""
    if name in __all__:
        from narm_lightning.serving import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
