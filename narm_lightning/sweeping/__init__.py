"""A Hydra sweeper on Optuna 5: search-space parsing, study management, the Sweeper plugin and reports.

Nothing here knows about NARM: the package drives any Hydra task function that returns a float.
Optuna is imported lazily (inside functions) because Hydra imports the plugin shim for every app run.
"""
