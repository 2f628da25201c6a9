"""Serving throughput on CPU: recommendations per second at batch size 1 and 256, eager and TorchScript.

``python -m bench.bench_serving [--ckpt best.ckpt] [--threads N]`` prints one JSON line and writes it to
``bench/out/serving.json``. Without ``--ckpt`` it scores with an untrained NARM of ml-100k's shape
(1,683 item rows, RecBole's default sizes): throughput does not depend on the weights. End to end, as a
caller sees it: id mapping, padding, scoring all items, top-K and naming the items.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from narm_lightning.cli.exits import run_or_exit  # noqa: E402
from narm_lightning.io import write_text_atomic  # noqa: E402
from narm_lightning.model.narm import NARM  # noqa: E402
from narm_lightning.serving.recommender import (
    Recommender,  # noqa: E402
    ScoringModel,  # noqa: E402
)

OUT = Path(__file__).resolve().parent / "out" / "serving.json"


def sessions_for(rec: Recommender, n: int, seed: int = 0) -> list[list[str]]:
    """``n`` sessions of uniformly random length 1..max_len over the known items."""
    rng = np.random.default_rng(seed)
    tokens = rec.item_tokens[1:]
    return [[tokens[i] for i in rng.integers(0, len(tokens), size=int(rng.integers(1, rec.max_len + 1)))]
            for _ in range(n)]


def throughput(rec: Recommender, batch_size: int, n: int, k: int, repeats: int = 3) -> float:
    """Best of ``repeats`` (least disturbed by other load) recommendations per second."""
    sessions = sessions_for(rec, n)
    rec.recommend(sessions[: batch_size * 3], k=k, batch_size=batch_size)  # warm-up (TorchScript profiles)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        rec.recommend(sessions, k=k, batch_size=batch_size)
        best = max(best, n / (time.perf_counter() - start))
    return best


def measure_serving(ckpt: str | None = None, k: int = 20, quick: bool = False) -> dict[str, object]:
    """Recommendations/s at batch size 1 and 256, eager and TorchScript (also a line of ``make bench``)."""
    torch.manual_seed(0)
    if ckpt:
        eager = Recommender.from_checkpoint(ckpt)
        model = eager.scorer.__self__  # NARM.predict's module
    else:
        model = NARM(1683, gru_impl="torch").eval()  # TorchScript needs nn.GRU itself
        eager = Recommender(model.predict, ["[PAD]"] + [str(i) for i in range(1, 1683)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(ScoringModel(model).eval())
    ts = Recommender(scripted, eager.item_tokens, eager.max_len)
    result: dict[str, object] = {"bench": "serving", "k": k, "n_items": eager.n_items, "max_len": eager.max_len,
                                 "source": ckpt or "untrained ml-100k-sized NARM"}
    n1, n256 = (30, 256) if quick else (300, 256 * 8)
    for name, rec in (("eager", eager), ("torchscript", ts)):
        result[f"{name}_recs_per_s_bs1"] = round(throughput(rec, 1, n1, k), 1)
        result[f"{name}_recs_per_s_bs256"] = round(throughput(rec, 256, n256, k), 1)
    result.update(torch=torch.__version__, threads=torch.get_num_threads(), cpus=os.cpu_count(),
                  loadavg=Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a training checkpoint (default: an untrained ml-100k-sized NARM)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    line = json.dumps(measure_serving(args.ckpt, args.k))
    write_text_atomic(OUT, line + "\n")
    print(line)


if __name__ == "__main__":
    run_or_exit(main)  # a bad config or data: one paragraph, exit 2
