"""Train NARM: ``python train.py [key=value ...]`` (see conf/train.yaml for every key)."""

import sys

import hydra
from omegaconf import DictConfig

from narm_lightning.checkpointing import resume_argv
from narm_lightning.cli import run_or_exit
from narm_lightning.training import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_or_exit(train, cfg)["best_valid_score"]


if __name__ == "__main__":
    sys.argv = run_or_exit(resume_argv, sys.argv)  # resume=<dir>: replay that run's overrides into that folder
    main()
