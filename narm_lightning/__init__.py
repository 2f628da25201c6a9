"""NARM (Li et al., CIKM 2017) on PyTorch Lightning + Hydra, numerically faithful to RecBole."""

__version__ = "0.1.0"

from importlib.util import find_spec
from pathlib import Path


def _conf_dir() -> Path:
    """The config tree: ``conf/`` at the top of a checkout, which the wheel (and an editable install) carries as the
    package ``narm_lightning.conf`` (pyproject's ``package-dir``: one tree, not a copy). A checkout used without
    installing it (only on ``sys.path``) has no such package: its ``conf/`` is beside this one."""
    spec = find_spec("narm_lightning.conf")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]).resolve() if locations else Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = _conf_dir()
