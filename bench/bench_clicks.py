"""A YOOCHOOSE-size click log through ``data=clicks``: read, filter, split and cache seconds, peak RSS, examples,
the cached second read, and memory over the first training batches (issue 35, point 3).

    make bench-clicks                      # makes bench/out/clicks-yoochoose-size.csv once (1.35 GB), then measures
    python -m bench.bench_clicks --clicks 1000000 --log /tmp/small.csv     # a smaller log

Each step runs in a fresh process (started as ``python -c``), so its peak RSS is its own: ``ru_maxrss`` of the
child. The log comes from ``bench/make_click_log.py`` (never committed). Targets (the issue's): at most 60 s and
4 GiB for the first read on 2 cores, seconds for the cached one, no growth over the first 20 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, resource, sys, time
from narm_lightning.data.sources import click_columns, load_clicks
started = time.perf_counter()
data = load_clicks({log!r}, click_columns("session_id", "item_id", "timestamp", None, False), test_days=1,
                   cache_dir={cache!r})
print(json.dumps({{"seconds": time.perf_counter() - started, "train": len(data.train), "valid": len(data.valid),
                  "test": len(data.test), "items": data.n_items - 1, "preprocess": data.stats.get("preprocess"),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

TRAIN = """
import json, resource, sys, time
import torch
from narm_lightning.data.datamodule import SequentialDataModule
from narm_lightning.data.sources import click_columns, load_clicks
from narm_lightning.model.narm import NARM
data = load_clicks({log!r}, click_columns("session_id", "item_id", "timestamp", None, False), test_days=1,
                   cache_dir={cache!r})
model = NARM(data.n_items)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loader = SequentialDataModule(data, 2048, 2048, bucket_batches=8, seed=0).train_dataloader()
rss = []
for step, (seq, length, target) in enumerate(loader):
    loss = torch.nn.functional.cross_entropy(model(seq, length) @ model.item_embedding.weight.t(), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20)
    if step == 19:
        break
print(json.dumps({{"rss_mib_by_batch": rss, "batches": len(rss),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def child(code: str) -> tuple[dict, float]:
    """(its JSON line, wall seconds) of a fresh Python process running ``code`` (which reports its own peak RSS:
    ``ru_maxrss`` of RUSAGE_SELF)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=ROOT / "bench" / "out" / "clicks-yoochoose-size.csv")
    parser.add_argument("--clicks", type=int, default=None, help="make the log with this many clicks (default: "
                        "YOOCHOOSE's 33,003,944) when it is missing")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "clicks.json")
    args = parser.parse_args(argv)
    if not args.log.exists():
        args.log.parent.mkdir(parents=True, exist_ok=True)
        size = [] if args.clicks is None else ["--clicks", str(args.clicks), "--sessions", str(args.clicks * 28 // 100)]
        subprocess.run([sys.executable, "-m", "bench.make_click_log", "--out", str(args.log), *size],
                       check=True)
    report: dict = {"log": str(args.log), "log_mib": round(args.log.stat().st_size / 2**20), "cpus": os.cpu_count(),
                    "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-clicks-") as cache:
        first, wall = child(LOAD.format(root=str(ROOT), log=str(args.log), cache=cache))
        report["first"] = {"seconds": round(first["seconds"], 3), "process_seconds": round(wall, 1),
                           "peak_rss_mib": round(first["peak_rss_mib"])}
        report["examples"] = {k: first[k] for k in ("train", "valid", "test", "items")}
        report["preprocess"] = first["preprocess"]
        cached, wall = child(LOAD.format(root=str(ROOT), log=str(args.log), cache=cache))
        report["cached"] = {"seconds": round(cached["seconds"], 3), "process_seconds": round(wall, 1),
                            "peak_rss_mib": round(cached["peak_rss_mib"])}
        trained, wall = child(TRAIN.format(root=str(ROOT), log=str(args.log), cache=cache))
        rss = trained["rss_mib_by_batch"]
        report["train_20_batches"] = {"rss_mib_batch_1": round(rss[0]), "rss_mib_batch_20": round(rss[-1]),
                                      "growth_mib_after_batch_5": round(rss[-1] - rss[4]), "seconds": round(wall, 1),
                                      "peak_rss_mib": round(trained["peak_rss_mib"])}
    report["load_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
