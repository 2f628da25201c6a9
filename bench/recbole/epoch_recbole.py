"""One process of ``make bench-recbole``: RecBole 1.2.1's training epoch on ml-100k, the seed's example.

    (in .venv-recbole) python -m bench.recbole.epoch_recbole --epochs 1 --data-path ../shared/data

``run_recbole(model='NARM', dataset='ml-100k', config_dict={'train_neg_sample_args': None})`` minus what is
not a training epoch: the dataset, dataloaders, model and trainer are built as run_recbole builds them, then
``Trainer._train_epoch`` (what ``fit`` calls each epoch) is timed ``--epochs`` times. Prints one JSON line.
Imports nothing of narm-lightning.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-path", default="../shared/data")
    args = parser.parse_args()
    data_path = str(Path(args.data_path).resolve())
    os.chdir(tempfile.mkdtemp(prefix="recbole-epoch-"))  # RecBole writes log/ and saved/ into the cwd

    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import NARM
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    started = time.perf_counter()
    config = Config(model="NARM", dataset="ml-100k", config_dict={
        "train_neg_sample_args": None, "data_path": data_path, "show_progress": False, "state": "ERROR"})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = NARM(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup = time.perf_counter() - started
    seconds = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"system": "recbole", "recbole": recbole.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "device": str(config["device"]), "setup_s": setup,
                      "epoch_s": seconds, "rows": len(train_data._dataset)}))


if __name__ == "__main__":
    main()
