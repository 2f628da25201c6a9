"""The NARM paper's session benchmark: train + test on DIGINETICA and YOOCHOOSE 1/64 with the paper's settings.

Runs ``train(cfg)`` with ``experiment=narm_paper_<dataset>`` for each dataset and writes
``bench/out/sessions.json`` and ``bench/out/sessions.md``: Recall@20 / MRR@20 (in %) beside the published
NARM figures, wall time per epoch and peak resident memory. ``--epochs`` shortens the run for a quick look
(the table says how many epochs were run; only 30 reproduces the paper's protocol).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Published NARM figures (Recall@20, MRR@20, in %).
PUBLISHED = {
    "yoochoose1_64": [("NARM paper (Li et al. 2017)", 68.32, 28.63)],
    "diginetica": [
        ("NARM paper, unsorted data (Li et al. 2017)", 62.58, 27.35),
        ("SR-GNN final version, sorted data (Wu et al. 2019)", 49.70, 16.17),
        ("Ludewig et al. 2019, sorted data", 49.79, 15.85),
    ],
}


def _run(dataset: str, overrides: list[str], queue: mp.Queue) -> None:
    """One benchmark in a fresh process, so peak RSS is this dataset's alone."""
    from narm_lightning.training import train
    from tests.helpers import compose_train

    cfg = compose_train([f"experiment=narm_paper_{dataset}", "logger=none", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        results = train(cfg, output_dir=tmp)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["yoochoose1_64", "diginetica"])
    parser.add_argument("--epochs", type=int, default=30, help="30 = the paper's protocol")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(
            target=_run, args=(dataset, [f"epochs={args.epochs}", "trainer.enable_progress_bar=false",
                                         *args.overrides], queue))
        proc.start()
        results = queue.get()
        proc.join()
        rows.append({"dataset": dataset, "epochs": results["epochs_run"], "best_epoch": results["best_epoch"],
                     "recall@20": 100 * results["test"]["recall@20"], "mrr@20": 100 * results["test"]["mrr@20"],
                     "seconds_per_epoch": results["fit_seconds"] / max(results["epochs_run"], 1),
                     "peak_rss_mib": results["peak_rss_mib"], "overrides": args.overrides})
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (out_dir / "sessions.json").write_text(json.dumps({"date": stamp, "rows": rows}, indent=2) + "\n")
    lines = [f"NARM session benchmark ({stamp}; `make bench-sessions`)", "",
             "| dataset | source | epochs | Recall@20 | MRR@20 | s/epoch (train+valid) | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['dataset']} | narm-lightning | {row['epochs']} | {row['recall@20']:.2f} | "
                     f"{row['mrr@20']:.2f} | {row['seconds_per_epoch']:.1f} | {row['peak_rss_mib']:.0f} |")
        for name, recall, mrr in PUBLISHED.get(row["dataset"], []):
            lines.append(f"| {row['dataset']} | {name} | 30 | {recall:.2f} | {mrr:.2f} | | |")
    (out_dir / "sessions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
