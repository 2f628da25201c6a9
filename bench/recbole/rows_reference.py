"""RecBole 1.2.1's own ml-100k examples as digests, and its metrics for the shared checkpoint (run in .venv-recbole):
`make recbole-rows`.

RecBole builds NARM's examples from the atomic file (leave-one-out, time order); this writes, for each of train,
valid and test, the number of rows and the SHA-256 of its rows as text, one line a row (``history item
tokens<TAB>target item token``; our examples do not keep the user), sorted so that the digest does not depend on
the row order. ``tests/recbole/test_recbole_rows.py`` computes the same digests from our rows: equal digests mean
not one row differs. Digests only: nothing of the data is committed. Then RecBole evaluates the shared NARM
checkpoint on those valid and test rows with all eleven metrics at several K, printed as RecBole prints them (4
decimals), for ``tests/recbole/test_recbole_rows.py`` to compare with ours. Needs RecBole's venv and
../shared/data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

METRICS = ["Recall", "MRR", "NDCG", "Hit", "Precision", "MAP", "ItemCoverage", "AveragePopularity", "GiniIndex",
           "ShannonEntropy", "TailPercentage"]
TOPK = [1, 5, 10, 20, 50]


def _let_recbole_collect_its_list_metrics() -> None:
    """RecBole 1.2.1's ``Collector.get_data_struct`` calls ``.cpu()`` on every collected value, and the list
    metrics' ``data.num_items`` (an int) and ``data.count_items`` (a Counter) have none: it crashes
    (docs/protocol.md). The same method, moving only what is a tensor, so that RecBole's own formulas run."""
    import copy

    import torch
    from recbole.evaluator.collector import Collector

    def get_data_struct(self):  # RecBole's body, with the isinstance test added
        for key in self.data_struct._data_dict:
            if isinstance(self.data_struct._data_dict[key], torch.Tensor):
                self.data_struct._data_dict[key] = self.data_struct._data_dict[key].cpu()
        returned_struct = copy.deepcopy(self.data_struct)
        for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"]:
            if key in self.data_struct:
                del self.data_struct[key]
        return returned_struct

    Collector.get_data_struct = get_data_struct


def digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", default="../shared/data")
    parser.add_argument("--out", default="tests/recbole/reference/recbole_ml100k_rows.json")
    parser.add_argument("--checkpoint", default="../shared/data/recbole-checkpoint/NARM-ml-100k-seed2020.pth")
    parser.add_argument("--dump", help="also write every row to this folder (<split>.tsv), for a diff by hand")
    args = parser.parse_args()
    data_path, out = str(Path(args.data_path).resolve()), Path(args.out).resolve()
    checkpoint = str(Path(args.checkpoint).resolve())
    dump = Path(args.dump).resolve() if args.dump else None
    os.chdir(tempfile.mkdtemp(prefix="recbole-rows-"))  # RecBole writes log/ into the cwd

    import numpy
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import NARM
    from recbole.trainer import Trainer

    from narm_lightning.recbole.checkpoint import load_recbole_state_dict  # no file read here runs code

    config = Config(model="NARM", dataset="ml-100k", config_dict={
        "train_neg_sample_args": None, "data_path": data_path, "show_progress": False, "state": "ERROR",
        "use_gpu": False, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": METRICS, "topk": TOPK})
    dataset = create_dataset(config)
    splits = dict(zip(("train", "valid", "test"), data_preparation(config, dataset), strict=True))
    report: dict = {"recbole": recbole.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
                    "command": " ".join(["python", *sys.argv]), "line": "history<TAB>target, sorted",
                    "splits": {}}
    for name, loader in splits.items():
        inter = loader._dataset.inter_feat
        targets = dataset.id2token(dataset.iid_field, inter[dataset.iid_field].numpy())
        seqs, lengths = inter[dataset.item_id_list_field].numpy(), inter[dataset.item_list_length_field].numpy()
        lines = [f"{' '.join(dataset.id2token(dataset.iid_field, s[:n]))}\t{t}\n"
                 for s, n, t in zip(seqs, lengths, targets, strict=True)]
        report["splits"][name] = {"rows": len(lines), "sha256": digest(lines)}
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / f"{name}.tsv").write_text("".join(sorted(lines)))
        print(f"{name}: {len(lines)} rows", flush=True)
    model = NARM(config, splits["valid"]._dataset)
    model.load_state_dict(load_recbole_state_dict(checkpoint))
    _let_recbole_collect_its_list_metrics()
    trainer = Trainer(config, model)
    trainer.eval_collector.data_collect(splits["train"])  # what Trainer.fit does first: item counts, for popularity
    report["checkpoint"] = {"file": Path(checkpoint).name, "metrics": METRICS, "topk": TOPK}
    for name in ("valid", "test"):
        result = trainer.evaluate(splits[name], load_best_model=False, show_progress=False)
        report["checkpoint"][name] = {k: float(v) for k, v in result.items()}
        print(f"{name}: {dict(result)}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
