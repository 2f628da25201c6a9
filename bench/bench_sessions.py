"""The NARM paper's session benchmark: train + test on DIGINETICA and YOOCHOOSE 1/64 with the paper's settings.

Runs ``train(cfg)`` with ``experiment=narm_paper_<dataset>`` for each dataset (or, with ``--collect``, reads
finished ``train.py`` runs of those experiments) and writes
``bench/out/sessions.json`` and ``bench/out/sessions.md``: Recall@20 / MRR@20 (in %) beside the published
NARM figures, wall time per epoch and peak resident memory. ``--epochs`` shortens the run for a quick look
(the table says how many epochs were run; only 30 reproduces the paper's protocol).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

from narm_lightning.cli.exits import run_or_exit  # noqa: E402
from narm_lightning.io import write_json_atomic, write_text_atomic  # noqa: E402

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
    """One benchmark in a fresh process, so peak RSS (recorded by ``train`` in its results) is this dataset's."""
    from narm_lightning.training.run import train
    from tests.helpers import compose_train

    cfg = compose_train([f"experiment=narm_paper_{dataset}", "logger=none", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        queue.put((train(cfg, output_dir=tmp), int(cfg.seed)))


def row_from(dataset: str, results: dict[str, Any], source: str, seed: int | None) -> dict[str, Any]:
    """One table row from a run's ``results.json``; figures a run did not record stay None."""
    return {"dataset": dataset, "source": source, "seed": seed,
            "epochs": results["epochs_run"],
            "best_epoch": results["best_epoch"],
            "refit": results.get("model_selection", "").startswith("last epoch"),  # data.valid_ratio=0: no hold-out
            "recall@20": 100 * results["test"]["recall@20"], "mrr@20": 100 * results["test"]["mrr@20"],
            "seconds_per_epoch": results.get("seconds_per_epoch"), "peak_rss_mib": results.get("peak_rss_mib"),
            "precision": results.get("precision")}


def collect(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Rows from finished ``train.py`` runs (each folder holds ``config.yaml`` and ``results.json``).

    The 30-epoch runs take hours on a CPU; run them with ``train.py experiment=narm_paper_<dataset>``, which
    can be resumed after an interruption (``resume=<run dir>``), then build the table from their folders.
    """
    rows = []
    for run_dir in run_dirs:
        paths = [run_dir / "config.yaml", run_dir / "results.json"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"--collect {run_dir}: {', '.join(missing)} not found; expected the folder of a "
                             "finished train.py run (it writes results.json when the test is done).")
        cfg = OmegaConf.load(paths[0])
        rows.append(row_from(cfg.data.dataset, json.loads(paths[1].read_text()), source=str(run_dir),
                             seed=cfg.get("seed")))
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "not recorded" if value is None else format(value, spec)


def write_tables(rows: list[dict[str, Any]], out_dir: Path) -> str:
    """``sessions.json`` and ``sessions.md``, written atomically.

    Rows are grouped by dataset (in order of first appearance): our runs, then the published NARM figures
    once, so several seeds of one dataset read as one block.
    """
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(out_dir / "sessions.json", {"date": stamp, "rows": rows})
    lines = [f"NARM session benchmark ({stamp}; `make bench-sessions`), Recall@20 / MRR@20 in %", "",
             "| dataset | source | epochs | best epoch | Recall@20 | MRR@20 | s/epoch (train+valid) | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        lines += [_our_line(row) for row in rows if row["dataset"] == dataset]
        lines += [f"| {dataset} | {name} | 30 | | {recall:.2f} | {mrr:.2f} | | |"
                  for name, recall, mrr in PUBLISHED.get(dataset, [])]
    table = "\n".join(lines) + "\n"
    write_text_atomic(out_dir / "sessions.md", table)
    return table


def _our_line(row: dict[str, Any]) -> str:
    seed = "" if row.get("seed") is None else f", seed {row['seed']}"
    return (f"| {row['dataset']} | narm-lightning ({row['precision']}{seed}) | {row['epochs']} | "
            f"{row['best_epoch']}{' (last; all training examples, no valid)' if row.get('refit') else ''} | "
            f"{row['recall@20']:.2f} | {row['mrr@20']:.2f} | "
            f"{_fmt(row['seconds_per_epoch'], '.1f')} | {_fmt(row['peak_rss_mib'], '.0f')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["yoochoose1_64", "diginetica"])
    parser.add_argument("--epochs", type=int, default=30, help="30 = the paper's protocol")
    parser.add_argument("--collect", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                        help="build the table from finished train.py runs instead of training here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="where the tables go")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        print(write_tables(collect(args.collect), args.out), end="")
        return
    rows = []
    for dataset in args.datasets:
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(dataset, [f"epochs={args.epochs}", "trainer.enable_progress_bar=false",
                                                       *args.overrides], queue))
        proc.start()
        results, seed = queue.get()
        proc.join()
        rows.append(row_from(dataset, results, source="make bench-sessions " + " ".join(args.overrides),
                             seed=seed))
    print(write_tables(rows, args.out), end="")


if __name__ == "__main__":
    run_or_exit(main)  # a bad config or data: one paragraph, exit 2
