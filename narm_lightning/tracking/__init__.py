"""Experiment tracking: Lightning loggers and Weights & Biases runs and sweep summaries."""
