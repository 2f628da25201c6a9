"""RecBole 1.2.1's own sampled evaluation of the shared NARM checkpoint, over many seeds (run in .venv-recbole).

    make recbole-sampled   # -> bench/recbole/sampled_reference.json

RecBole redraws uni100 / pop100 negatives at every evaluation, so one figure is one draw: this evaluates the
checkpoint's weights on ml-100k's valid and test users (leave-one-out, time order) under each mode for seeds
0..N-1 and writes every seed's metrics. tests/data/test_candidates.py compares the mean of ours over as many
candidate seeds with this file's mean (both are means of N draws: the check is within their sampling noise).
Needs RecBole's venv and ../shared/data. The checkpoint's weights are read with this project's restricted
loader (``narm_lightning.recbole.checkpoint``, torch and the standard library only): RecBole pickles its
Config into the file, and no file read here runs code, in a benchmark either.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="../shared/data/recbole-checkpoint/NARM-ml-100k-seed2020.pth")
    parser.add_argument("--data-path", default="../shared/data")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--modes", default="uni100,pop100")
    parser.add_argument("--out", default="bench/recbole/sampled_reference.json")
    args = parser.parse_args()
    checkpoint, data_path, out = (str(Path(p).resolve()) for p in (args.checkpoint, args.data_path, args.out))
    os.chdir(tempfile.mkdtemp(prefix="recbole-sampled-"))  # RecBole writes log/ and saved/ into the cwd

    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import NARM
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    from narm_lightning.recbole.checkpoint import load_recbole_state_dict

    state = load_recbole_state_dict(checkpoint)
    report: dict = {"recbole": recbole.__version__, "torch": torch.__version__, "python": platform.python_version(),
                    "checkpoint": Path(checkpoint).name, "seeds": list(range(args.seeds)), "modes": {},
                    "command": " ".join(["python", *sys.argv])}
    for mode in args.modes.split(","):
        started = time.time()
        config = Config(model="NARM", dataset="ml-100k", config_dict={
            "train_neg_sample_args": None, "data_path": data_path, "show_progress": False, "state": "ERROR",
            "use_gpu": False, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode},
            "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "topk": [10]})
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        _, valid_data, test_data = data_preparation(config, dataset)
        model = NARM(config, valid_data._dataset)
        model.load_state_dict(state)
        trainer = Trainer(config, model)
        runs = []
        for seed in range(args.seeds):
            init_seed(seed, True)
            valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
            test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            runs.append({"seed": seed, "valid": dict(valid), "test": dict(test)})
        report["modes"][mode] = runs
        print(f"{mode}: {args.seeds} seeds in {time.time() - started:.1f} s; test mrr@10 of seed 0 "
              f"{runs[0]['test']['mrr@10']}", flush=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
