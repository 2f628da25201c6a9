"""One process of ``make bench-recbole``: this project's training epoch on ml-100k through the real Trainer.

    python -m bench.recbole.epoch_ours --epochs 1 [hydra overrides...]

The same measurement as ``make bench`` (``bench.py``'s ``Variant.run_epoch``: a Lightning ``fit`` of one
epoch, validation off, the epoch's wall seconds from its start and end hooks), in a process of its own so it
alternates with RecBole's. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batches", type=int, default=None, help="train batches per epoch (default: all)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    started = time.perf_counter()
    import torch

    from bench.bench import Variant, resolve_precision

    variant = Variant("ours", list(args.overrides), {}, args.batches)
    if variant.cfg.trainer.num_threads:  # as train.py does (Variant builds its Trainer directly)
        torch.set_num_threads(variant.cfg.trainer.num_threads)
    setup = time.perf_counter() - started
    seconds = [variant.run_epoch() for _ in range(args.epochs)]
    print(json.dumps({"system": "ours", "overrides": args.overrides, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "precision": resolve_precision(variant.cfg.trainer),
                      "setup_s": setup, "epoch_s": seconds, "rows": len(variant.data.train),
                      "batches": len(variant.datamodule.train_dataloader()) if args.batches is None else args.batches}))


if __name__ == "__main__":
    main()
