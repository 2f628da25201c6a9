"""NARM (Li et al., CIKM 2017) on PyTorch Lightning + Hydra, numerically faithful to RecBole."""

__version__ = "0.1.0"

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the shipped configs (package data in the wheel)
