"""Hyper-parameter search for NARM: ``python sweep.py -m [overrides]`` (the same as ``narm-sweep -m``).

Each trial is one ``train(cfg)`` run; its ``best_valid_score`` (the valid_metric) is the objective. Run the
same command again to continue the study. ``--params-file=hyper.test`` takes RecBole's search-space file.
"""

from narm_lightning.cli.entry import sweep_main

if __name__ == "__main__":
    sweep_main()
