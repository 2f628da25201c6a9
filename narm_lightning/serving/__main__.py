"""``python -m narm_lightning.serving [export] key=value ...``: the same as ``narm-recommend``."""

from narm_lightning.serving.cli import main

main()
