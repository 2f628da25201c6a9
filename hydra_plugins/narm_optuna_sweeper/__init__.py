"""Hydra discovers plugins only under the ``hydra_plugins`` namespace package; this is our shim."""
