"""``python -m narm_lightning.serving [export] key=value ...``: the same as ``narm-recommend``."""

from narm_lightning.cli.entry import recommend_main

recommend_main()
