"""NARM (Li et al., CIKM 2017) on PyTorch Lightning + Hydra, numerically faithful to RecBole."""

__version__ = "0.1.0"
