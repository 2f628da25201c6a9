"""``python -m narm_lightning.recommend``: the serving command line under its earlier name (kept so existing
scripts work); the code lives in ``narm_lightning.serving``, which never imports this module."""

from narm_lightning.serving import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender"]

if __name__ == "__main__":
    from narm_lightning.cli.entry import recommend_main

    recommend_main()
