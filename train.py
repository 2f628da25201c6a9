"""Train NARM: ``python train.py [key=value ...]`` (the same as ``narm-train``; ``--help`` lists the main keys)."""

from narm_lightning.cli.entry import train_main

if __name__ == "__main__":
    train_main()
