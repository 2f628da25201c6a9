"""Serving a trained NARM: ``Recommender`` (top-K in original item ids), ``export`` (TorchScript, ONNX) and the
``narm-recommend`` command line. Plain torch: nothing here imports Lightning, and nothing here is imported by
training. The command line imports the rest, never the reverse.
"""

from narm_lightning.serving.recommender import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender"]
