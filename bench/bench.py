"""``make bench``: how fast the default NARM run trains and evaluates on this machine, and how close to the math.

Writes ``bench/out/report.json`` + ``bench/out/report.md`` and appends a dated entry to ``bench/HISTORY.md``.
Every figure is measured here, in this run: nothing is hard-coded. Several variants (``--variant
name=override,override``) are timed *interleaved* (epoch by epoch) so a shared, noisy machine hurts them alike.

Measured per variant:
  * training epoch seconds through the real Lightning Trainer (median of ``--epochs`` after one warm-up),
  * training samples/s, full-sort valid and test seconds (``trainer.validate``/``trainer.test`` and bare),
  * the math floor: the same model's bare forward + backward + Adam step over the same batches, no
    Lightning and no data loading, plus the fp32 floor padded to ``max_item_list_length`` and trimmed,
  * overhead = epoch / floor(same batches, same precision) - 1, and the process's peak resident memory,
  * a second floor, the matrix products alone (``matmul_floor_seconds``): what the machine's GEMMs need for
    the same batch shapes, so the gap between eager torch and the machine stays visible.

Serving (``--no-serving`` to skip): recommendations/s at batch size 1 and 256, eager and TorchScript.

DIGINETICA (``../shared/data``, on by default, ``--no-diginetica`` to skip): each variant with
``data=diginetica``, a training epoch estimated from ``--diginetica-batches`` timed batches, full-sort valid
and test seconds, and evaluation's peak memory beside the size of one score block.

Sweep throughput (``--no-throughput`` to skip): training epochs per hour of the defaults laid out as a sweep
can run its trials on this machine, one worker with a thread per core against one single-thread worker per
core (processes at once, ``python -m bench.recbole.epoch_ours``); trials per hour scale with it.

``--accuracy --seeds N`` trains each variant to early stopping on N seeds and reports test MRR/NDCG/Recall@10.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bench.bench_serving import measure_serving  # noqa: E402
from narm_lightning import CONF_DIR  # noqa: E402
from narm_lightning.cli.exits import run_or_exit  # noqa: E402
from narm_lightning.config.schema import register  # noqa: E402
from narm_lightning.config.validation import validate  # noqa: E402
from narm_lightning.data.protocol import SequentialData  # noqa: E402
from narm_lightning.errors import DataError  # noqa: E402
from narm_lightning.model.metrics import RankMetrics  # noqa: E402
from narm_lightning.model.narm import NARM  # noqa: E402
from narm_lightning.training.builders import build_datamodule, build_module, load_data  # noqa: E402
from narm_lightning.training.precision import resolve_precision  # noqa: E402
from narm_lightning.training.results import peak_rss_mib  # noqa: E402
from narm_lightning.training.run import train  # noqa: E402

HISTORY = ROOT / "bench" / "HISTORY.md"


# the developers' datasets beside the checkout (never fetched, never committed); a variant's overrides may name others
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
DATA_ROOTS = [f"data.extra_roots=[{SHARED_DATA}]"] if SHARED_DATA.is_dir() else []


def compose_cfg(overrides: list[str]) -> DictConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*DATA_ROOTS, *overrides])
    validate(cfg)
    return cfg


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def status_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since start or the last ``reset_peak_rss``) of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (Linux: ``clear_refs`` 5), so one phase's peak can be read alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class EpochTimer(pl.Callback):
    """Wall seconds of each training epoch (training batches only: validation is timed on its own)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class Variant:
    """One config under test: its module, datamodule and a Trainer per measured epoch."""

    def __init__(self, name: str, overrides: list[str], data_cache: dict[str, SequentialData],
                 limit_batches: int | None) -> None:
        self.name = name
        self.overrides = overrides
        self.cfg = compose_cfg(overrides)
        pl.seed_everything(self.cfg.seed, workers=True, verbose=False)
        key = json.dumps(OmegaConf.to_container(self.cfg.data, resolve=True), sort_keys=True)
        if key not in data_cache:
            data_cache[key] = load_data(self.cfg)
        self.data = data_cache[key]
        self.module = build_module(self.cfg, self.data.n_items)
        self.datamodule = build_datamodule(self.cfg, self.data)
        self.timer = EpochTimer()
        self.limit_batches = limit_batches
        self.epoch = 0
        self.gpu_peak_train_mib: float | None = None

    def trainer(self, **kwargs: Any) -> pl.Trainer:
        t = self.cfg.trainer
        return pl.Trainer(
            accelerator=t.accelerator, devices=t.devices, precision=resolve_precision(t), deterministic=t.deterministic,
            enable_progress_bar=False, log_every_n_steps=t.log_every_n_steps, logger=False,
            enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
            use_distributed_sampler=False,  # as build_trainer: the datamodule shards itself, no loader rebuilt
            **kwargs,
        )

    def run_epoch(self) -> float:
        """One more training epoch through ``Trainer.fit`` (a fresh one-epoch Trainer; the module keeps learning)."""
        self.epoch += 1
        trainer = self.trainer(max_epochs=1, limit_val_batches=0, callbacks=[self.timer],
                               limit_train_batches=self.limit_batches or 1.0)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(self.module, datamodule=self.datamodule)
        peak = gpu_peak_mib()
        if peak is not None:
            self.gpu_peak_train_mib = max(self.gpu_peak_train_mib or 0.0, peak)
        return self.timer.seconds[-1]

    def eval_seconds(self, repeats: int = 5) -> dict[str, float]:
        """Full-sort evaluation of the valid and test splits: through the Trainer and bare (model + metric).

        Each figure is the median of ``repeats`` passes after one warm-up pass (which compiles what the first
        call compiles): one ml-100k pass is ~50 ms, where one scheduler hiccup is 10-20%."""
        out: dict[str, float] = {}
        trainer = self.trainer()
        for split in ("valid", "test"):
            run = trainer.validate if split == "valid" else trainer.test
            for name, fn in (("trainer", partial(run, self.module, datamodule=self.datamodule, verbose=False)),
                             ("bare", partial(self.eval_bare, getattr(self.data, split)))):
                fn()  # warm-up
                seconds = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    fn()
                    seconds.append(time.perf_counter() - started)
                out[f"{split}_{name}_s"] = statistics.median(seconds)
        return out

    def eval_bare(self, examples: Any) -> None:
        """One full-sort pass over ``examples`` with the model and the metric only (no Trainer): each block
        ranked as validation and test rank it (``NARMModule._rank``)."""
        device = "cuda" if on_gpu(self.cfg) else "cpu"
        module = self.module.eval().to(device)
        bs = self.cfg.eval_batch_size
        metric = RankMetrics(list(self.cfg.topk), list(self.cfg.metrics)).to(device)
        with torch.inference_mode():
            for i in range(0, len(examples), bs):
                idx = torch.arange(i, min(i + bs, len(examples)))
                module._rank((examples.histories(idx).to(device), examples.item_seq_len[idx].to(device),
                              examples.target[idx].to(device)), metric)
            metric.compute()
        module.cpu()


def on_gpu(cfg: DictConfig) -> bool:
    """Whether this variant trains on CUDA (``trainer=gpu``), so floors and memory are measured there."""
    return str(cfg.trainer.accelerator) in ("gpu", "cuda") or (
        str(cfg.trainer.accelerator) == "auto" and torch.cuda.is_available())


def gpu_peak_mib() -> float | None:
    """Peak CUDA memory allocated by tensors since the last reset (None without CUDA)."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def floor_seconds(cfg: DictConfig, n_items: int, batches: list[tuple[torch.Tensor, ...]], bf16: bool,
                  pad_to: int | None) -> float:
    """Bare forward + CE + backward + Adam step over ``batches``: no Lightning, no data loading."""
    torch.manual_seed(cfg.seed)
    device = "cuda" if on_gpu(cfg) else "cpu"
    m = cfg.model
    model = NARM(n_items, m.embedding_size, m.hidden_size, m.n_layers, list(m.dropout_probs),
                 gru_impl=m.gru_impl).train().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    if pad_to is not None:
        batches = [(F.pad(s, (0, pad_to - s.size(1))), n, t) for s, n, t in batches]
    batches = [(s.to(device), n.to(device), t.to(device)) for s, n, t in batches]
    cast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(seq: torch.Tensor, length: torch.Tensor, target: torch.Tensor) -> None:
        with cast:
            loss = F.cross_entropy(model(seq, length) @ model.item_embedding.weight.t(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:2]:  # warm-up (allocator, kernels)
        step(*b)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for b in batches:
        step(*b)
    sync()
    return time.perf_counter() - started


def matmul_floor_seconds(cfg: DictConfig, n_items: int, batches: list[tuple[torch.Tensor, ...]], bf16: bool) -> float:
    """The matrix products of a NARM step alone, over the same batch shapes: the floor of this machine's math.

    Per batch (B rows, T steps): the input projection (B*T x E by E x 3H), T recurrent products (B x H by
    H x 3H), the attention's two (B*T x H by H x H, B x H by H x H), the output layer (B x 2H by 2H x E)
    and the scores (B x E by E x items), each forward and its two backward products (of the recurrence the
    weight gradient as one product over all steps, as the fused GRU does). Random operands in the step's
    GEMM dtype (bf16 under bf16-mixed); no elementwise op, no allocation in the timed loop but the outputs'.
    One Python call per product: on tiny shapes the call overhead dominates and this is no floor; at NARM's
    batch sizes (2048 rows) each product takes far longer than its call.
    """
    device = "cuda" if on_gpu(cfg) else "cpu"
    dtype = torch.bfloat16 if bf16 else torch.float32
    e, h = cfg.model.embedding_size, cfg.model.hidden_size
    gen = torch.Generator(device="cpu").manual_seed(0)

    def operands(m: int, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
        return rand(m, k), rand(k, n), rand(m, n)

    plans = []
    for seq, _, _ in batches:
        b, t = seq.shape
        shapes = [(b * t, e, 3 * h), (b * t, h, h), (b, h, h), (b, 2 * h, e), (b, e, n_items)]
        plans.append(([operands(*s) for s in shapes], operands(b, h, 3 * h), t, operands(b * t, 3 * h, h)))

    def run(plan: tuple) -> None:
        products, recurrent, steps, weight_grad = plan
        for a, w, g in products:  # forward, input gradient, weight gradient
            torch.mm(a, w), torch.mm(g, w.t()), torch.mm(a.t(), g)
        a, w, g = recurrent
        for _ in range(steps):  # forward and backward through time, one product each way per step
            torch.mm(a, w), torch.mm(g, w.t())
        a, _, g = weight_grad
        torch.mm(a.t(), g)  # the recurrent weight's gradient over all steps at once (3H x T*B by T*B x H)

    for plan in plans[:2]:
        run(plan)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for plan in plans:
        run(plan)
    sync()
    return time.perf_counter() - started


def measure(args: argparse.Namespace, variants: list[tuple[str, list[str]]]) -> dict[str, Any]:
    limit = 6 if args.quick else args.batches
    cache: dict[str, SequentialData] = {}
    runs = [Variant(name, ov, cache, limit) for name, ov in variants]
    for v in runs:
        if v.cfg.trainer.num_threads:
            torch.set_num_threads(v.cfg.trainer.num_threads)
    for _ in range(args.epochs + 1):  # interleaved: epoch e of every variant before epoch e+1 of any
        for v in runs:
            v.run_epoch()
            print(f"[bench] {v.name}: epoch {v.epoch} {v.timer.seconds[-1]:.2f}s  load {loadavg()}", flush=True)
    results: dict[str, Any] = {}
    for v in runs:
        measured = v.timer.seconds[1:]  # first epoch is the warm-up
        n_samples = min(len(v.data.train), (limit or 10**12) * v.cfg.train_batch_size)
        epoch_s = statistics.median(measured)
        ev = v.eval_seconds()
        batches = list(v.datamodule.train_dataloader())[: limit or None]
        bf16 = resolve_precision(v.cfg.trainer).startswith("bf16")
        same = floor_seconds(v.cfg, v.data.n_items, batches, bf16, None)
        print(f"[bench] {v.name}: floor(same batches) {same:.2f}s  load {loadavg()}", flush=True)
        floors = {"floor_same_s": same, "floor_matmul_s": matmul_floor_seconds(v.cfg, v.data.n_items, batches, bf16)}
        if not args.no_fp32_floors and v is runs[-1]:  # the references, for the candidate (last variant) only
            floors["floor_fp32_trimmed_s"] = floor_seconds(v.cfg, v.data.n_items, batches, False, None)
            floors["floor_fp32_padded_s"] = floor_seconds(
                v.cfg, v.data.n_items, batches, False, v.cfg.data.max_item_list_length)
            print(f"[bench] {v.name}: fp32 floors {floors}  load {loadavg()}", flush=True)
        results[v.name] = {
            "overrides": v.overrides,
            "epoch_seconds": [round(s, 3) for s in v.timer.seconds],
            "epoch_median_s": round(epoch_s, 3),
            "samples_per_s": round(n_samples / epoch_s, 1),
            "n_train_samples_per_epoch": n_samples,
            **{k: round(x, 4) for k, x in ev.items()},
            **{k: round(x, 3) for k, x in floors.items()},
            "overhead_pct": round(100 * (epoch_s / same - 1), 1),
            "batch_widths_mean": round(statistics.mean(b[0].size(1) for b in batches), 2),
            "gpu_peak_train_mib": v.gpu_peak_train_mib,
        }
    return results


def sessions(args: argparse.Namespace, variants: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """DIGINETICA (``data=diginetica``, each variant's overrides): a training epoch and full-sort evaluation.

    A full epoch is hundreds of batches, so ``--diginetica-batches`` of them are timed per epoch (median of
    ``--epochs`` after a warm-up) and scaled to the epoch's batch count (reported as an estimate, with the
    measured part beside it). Evaluation is timed on the whole valid and test splits, once each, with the peak
    memory above the resident memory before it, next to the size of one eval_batch_size x n_items score block.
    """
    limit = 6 if args.quick else args.diginetica_batches
    cache: dict[str, SequentialData] = {}
    started = time.perf_counter()
    try:
        runs = [Variant(name, [*ov, "data=diginetica"], cache, limit) for name, ov in variants]
    except DataError as exc:
        return f"skipped: {exc}"
    load_s = time.perf_counter() - started
    for _ in range(args.epochs + 1):
        for v in runs:
            v.run_epoch()
            print(f"[bench] diginetica {v.name}: {limit} batches {v.timer.seconds[-1]:.2f}s  load {loadavg()}",
                  flush=True)
    out: dict[str, Any] = {}
    for v in runs:
        n_batches = -(-len(v.data.train) // v.cfg.train_batch_size)
        part_s = statistics.median(v.timer.seconds[1:])
        row: dict[str, Any] = {
            "overrides": v.overrides, "n_train": len(v.data.train), "n_valid": len(v.data.valid),
            "n_test": len(v.data.test), "n_items": v.data.n_items, "batches_per_epoch": n_batches,
            "batches_timed": limit, "partial_epoch_seconds": [round(s, 3) for s in v.timer.seconds],
            "epoch_estimate_s": round(part_s / limit * n_batches, 1),
            "samples_per_s": round(limit * v.cfg.train_batch_size / part_s, 1),
            "score_block_mib": round(v.cfg.eval_batch_size * v.data.n_items * 4 / 2**20, 1),
            "load_s": round(load_s, 1),
            "gpu_peak_train_mib": v.gpu_peak_train_mib,
        }
        # --quick: 2 blocks per split, a smoke run (the figures then say so: eval_blocks)
        trainer = v.trainer(limit_val_batches=2, limit_test_batches=2) if args.quick else v.trainer()
        row["eval_blocks"] = "2 per split (--quick)" if args.quick else "all"
        for split in ("valid", "test"):
            run = trainer.validate if split == "valid" else trainer.test
            before = status_mib("VmRSS")
            peak_ok = reset_peak_rss()
            t0 = time.perf_counter()
            run(v.module, datamodule=v.datamodule, verbose=False)
            row[f"{split}_s"] = round(time.perf_counter() - t0, 2)
            row[f"{split}_peak_over_rss_mib"] = round(status_mib("VmHWM") - before, 1) if peak_ok else None
        print(f"[bench] diginetica {v.name}: {row}", flush=True)
        out[v.name] = row
    return out


def sweep_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Epochs per hour of the defaults for each way a sweep can lay its workers on this machine's cores.

    ``1xN``: one process with N threads; ``Nx1``: N processes at once with one thread each (N = cores). Each
    process trains ``--throughput-epochs`` epochs; its steady epoch is the median after its first (which
    compiles kernels and warms caches). Epochs per hour = the sum over processes of 3600 / steady epoch, as
    workers keep running trials back to back; the wall time of each layout is reported beside it.
    """
    cores = os.cpu_count() or 1
    epochs = max(2, args.throughput_epochs)
    extra = ["--batches", "6"] if args.quick else []
    out: dict[str, Any] = {"cores": cores, "epochs_per_process": epochs, "layouts": {}}
    for name, threads in ((f"1x{cores}", [cores]), (f"{cores}x1", [1] * cores)):
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "bench.recbole.epoch_ours", "--epochs", str(epochs), *extra,
                                   f"trainer.num_threads={t}", *args.overrides],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for t in threads]
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"throughput worker ({name}) failed:\n{stderr[-2000:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - started
        steady = [statistics.median(r["epoch_s"][1:]) for r in results]
        out["layouts"][name] = {
            "threads_per_process": threads[0], "processes": len(threads), "wall_s": round(wall, 1),
            "steady_epoch_s": [round(x, 2) for x in steady],
            "first_epoch_s": [round(r["epoch_s"][0], 2) for r in results],
            "epochs_per_hour": round(sum(3600 / x for x in steady), 1),
            "batches_per_epoch": results[0]["batches"],
        }
        print(f"[bench] sweep throughput {name}: {out['layouts'][name]}  load {loadavg()}", flush=True)
    best = max(out["layouts"], key=lambda k: out["layouts"][k]["epochs_per_hour"])
    out["faster"] = best
    return out


def accuracy(args: argparse.Namespace, variants: list[tuple[str, list[str]]], out_dir: Path) -> dict[str, Any]:
    """Train every variant to early stopping on each seed (interleaved) and summarise the test metrics."""
    keys = ("mrr@10", "ndcg@10", "recall@10")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for i in range(args.seeds):
        for name, ov in variants:
            seed = args.first_seed + i
            cfg = compose_cfg([*ov, f"seed={seed}", "logger=none", "trainer.enable_progress_bar=false"])
            res = train(cfg, output_dir=out_dir / "accuracy" / name / f"seed{seed}")
            runs[name].append({"seed": seed, **{k: res["test"][k] for k in keys}, "best_epoch": res["best_epoch"],
                               "epochs_run": res["epochs_run"], "fit_seconds": res["fit_seconds"]})
            print(f"[bench] accuracy {name} seed {seed}: {runs[name][-1]}  load {loadavg()}", flush=True)
    return summarise_accuracy(runs)


def summarise_accuracy(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of each variant's test metrics."""
    keys = ("mrr@10", "ndcg@10", "recall@10")
    summary: dict[str, Any] = {}
    for name, rows in runs.items():
        if not rows:  # --seeds 0
            continue
        summary[name] = {"runs": rows}
        for k in keys:
            vals = [r[k] for r in rows]
            summary[name][k] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return summary


def collect_accuracy(dirs: list[Path]) -> dict[str, Any]:
    """The accuracy summary of runs made by earlier (e.g. parallel, one seed each) ``--accuracy-only`` calls.

    Reads ``<dir>/accuracy/<variant>/seed<N>/results.json``, which ``train`` writes atomically at the end of
    each finished run; an unfinished run has none and is left out (and so is not averaged in).
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        for path in sorted((d / "accuracy").glob("*/seed*/results.json")):
            res = json.loads(path.read_text())
            seed = int(path.parent.name.removeprefix("seed"))
            runs.setdefault(path.parent.parent.name, []).append({
                "seed": seed, **{k: res["test"][k] for k in ("mrr@10", "ndcg@10", "recall@10")},
                "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "fit_seconds": res["fit_seconds"],
                "precision": res.get("precision"), "source": str(path)})
    for rows in runs.values():
        rows.sort(key=lambda r: r["seed"])
    return summarise_accuracy(runs)


def measure_clicks(args: argparse.Namespace) -> dict[str, Any]:
    """bench/bench_clicks.py in its own processes (each step's peak RSS is its own); --quick: a 1 M-click log."""
    out = args.out / "clicks.json"
    extra = ["--clicks", "1000000", "--log", str(args.out / "clicks-1m.csv")] if args.quick else []
    subprocess.run([sys.executable, "-m", "bench.bench_clicks", "--out", str(out), *extra], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def markdown(report: dict[str, Any]) -> str:
    lines = [f"### {report['date']} — {report['git']} — load {report['load_before']} -> {report['load_after']}", ""]
    if report.get("note"):
        lines += [report["note"], ""]
    lines += [f"`{report['command']}`; torch {report['torch']}, {report['threads']} threads, "
              f"peak RSS {report['peak_rss_mib']:.0f} MiB (whole process)", ""]
    cols = ["variant", "epoch s (median)", "samples/s", "floor same s", "overhead %", "matmuls alone s",
            "floor fp32 trimmed s",
            "floor fp32 padded s", "mean width", "valid s (trainer/bare)", "test s (trainer/bare)"]
    if report["speed"]:  # empty for --accuracy-only / --collect
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in report["speed"].items():
        lines.append("| " + " | ".join([
            f"`{name}`", f"{r['epoch_median_s']:.2f}", f"{r['samples_per_s']:.0f}", f"{r['floor_same_s']:.2f}",
            f"{r['overhead_pct']:+.1f}", f"{r.get('floor_matmul_s', float('nan')):.2f}",
            f"{r.get('floor_fp32_trimmed_s', float('nan')):.2f}",
            f"{r.get('floor_fp32_padded_s', float('nan')):.2f}", f"{r['batch_widths_mean']:.1f}",
            f"{r['valid_trainer_s']:.3f} / {r['valid_bare_s']:.3f}",
            f"{r['test_trainer_s']:.3f} / {r['test_bare_s']:.3f}",
        ]) + " |")
    lines.append("")
    for name, r in report["speed"].items():
        gpu = f"; GPU peak {r['gpu_peak_train_mib']:.0f} MiB" if r.get("gpu_peak_train_mib") is not None else ""
        lines.append(f"- `{name}` = `{' '.join(r['overrides']) or '(defaults)'}`; epochs: {r['epoch_seconds']}{gpu}")
    if report.get("accuracy"):
        lines += ["", "| variant | seeds | test MRR@10 | test NDCG@10 | test Recall@10 | best epochs |",
                  "|---|---|---|---|---|---|"]
        for name, a in report["accuracy"].items():
            cells = [f"{a[k]['mean']:.4f} ± {a[k]['std']:.4f}" for k in ("mrr@10", "ndcg@10", "recall@10")]
            epochs = [r["best_epoch"] for r in a["runs"]]
            lines.append(f"| `{name}` | {len(a['runs'])} | " + " | ".join(cells) + f" | {epochs} |")
    s = report.get("serving")
    if s:
        lines.append(f"\nServing ({s['source']}, top-{s['k']}, recommendations/s): batch 1 "
                     f"{s['eager_recs_per_s_bs1']:.0f} eager / {s['torchscript_recs_per_s_bs1']:.0f} TorchScript; "
                     f"batch 256 {s['eager_recs_per_s_bs256']:.0f} eager / {s['torchscript_recs_per_s_bs256']:.0f} "
                     "TorchScript")
    tp = report.get("throughput")
    if tp:
        lines += ["", f"Sweep throughput (defaults, {tp['epochs_per_process']} epochs a process, steady = median "
                  "after each process's first):", "",
                  "| layout | processes x threads | steady epoch s (each process) | first epoch s | epochs/hour "
                  "| wall s |",
                  "|---|---|---|---|---|---|"]
        for name, r in tp["layouts"].items():
            lines.append(f"| `{name}`{' (faster)' if name == tp['faster'] else ''} | {r['processes']} x "
                         f"{r['threads_per_process']} | {', '.join(map(str, r['steady_epoch_s']))} | "
                         f"{', '.join(map(str, r['first_epoch_s']))} | {r['epochs_per_hour']:.0f} | {r['wall_s']} |")
    dig = report.get("diginetica")
    if isinstance(dig, dict):
        lines += ["", "DIGINETICA (`data=diginetica`; epoch = median time of the timed batches x batches per epoch):",
                  "", "| variant | epoch s (estimate) | samples/s | batches timed / per epoch | valid s | test s | "
                  "eval peak over RSS MiB (valid/test) | one score block MiB |", "|---|---|---|---|---|---|---|---|"]
        for name, r in dig.items():
            lines.append(f"| `{name}` | {r['epoch_estimate_s']:.0f} | {r['samples_per_s']:.0f} | "
                         f"{r['batches_timed']} / {r['batches_per_epoch']} | {r['valid_s']:.1f} | {r['test_s']:.1f} | "
                         f"{r['valid_peak_over_rss_mib']} / {r['test_peak_over_rss_mib']} | {r['score_block_mib']} |"
                         + (f" GPU peak {r['gpu_peak_train_mib']:.0f} MiB" if r.get("gpu_peak_train_mib") else ""))
        first = next(iter(dig.values()))
        lines.append(f"\n{first['n_train']:,} train / {first['n_valid']:,} valid / {first['n_test']:,} test rows, "
                     f"{first['n_items']:,} items (with padding); data loaded in {first['load_s']} s")
    else:
        lines.append(f"\nDIGINETICA: {dig}")
    c = report.get("clicks")
    if isinstance(c, dict):
        p = c["preprocess"]
        lines.append(f"\nClick log (`data=clicks`, {p['clicks']:,} clicks, {p['sessions']:,} sessions, "
                     f"{c['log_mib']:,} MiB CSV, `bench/bench_clicks.py`): read, filtered, split and cached in "
                     f"{c['first']['seconds']} s, peak RSS {c['first']['peak_rss_mib']:,} MiB; from the cache "
                     f"{c['cached']['seconds']} s; {c['examples']['train']:,} train / "
                     f"{c['examples']['valid']:,} valid / {c['examples']['test']:,} test examples, "
                     f"{c['examples']['items']:,} items; RSS over the first 20 training batches "
                     f"{c['train_20_batches']['rss_mib_batch_1']:,} -> "
                     f"{c['train_20_batches']['rss_mib_batch_20']:,} MiB")
    elif c:
        lines.append(f"\nClick log: {c}")
    return "\n".join(lines) + "\n"


def parse_variants(specs: list[str], common: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for spec in specs or ["default="]:
        name, _, ov = spec.partition("=")
        out.append((name, [*common, *[o for o in ov.split(",") if o]]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="measured training epochs after one warm-up epoch")
    p.add_argument("--quick", action="store_true", help="6 batches per epoch and per floor: a smoke run")
    p.add_argument("--batches", type=int, default=None,
                   help="train batches per epoch and per floor (default: all); samples/s stays comparable")
    p.add_argument("--variant", action="append", default=[],
                   help="name=override,override (repeat to compare; default: one variant with the defaults)")
    p.add_argument("--accuracy", action="store_true", help="also train each variant to early stopping per seed")
    p.add_argument("--accuracy-only", action="store_true",
                   help="no ml-100k timing or sweep throughput; DIGINETICA, serving and clicks still run unless "
                        "--no-diginetica --no-serving --no-clicks (then: the accuracy runs alone)")
    p.add_argument("--seeds", type=int, default=3, help="seeds for --accuracy (first-seed, first-seed + 1, ...)")
    p.add_argument("--first-seed", type=int, default=2020, help="first accuracy seed (split seeds over processes)")
    p.add_argument("--collect", type=Path, nargs="+", default=None,
                   help="only summarise finished accuracy runs found under these --out folders (no training)")
    p.add_argument("--no-fp32-floors", action="store_true",
                   help="skip the fp32 padded/trimmed reference floors (else: last variant)")
    p.add_argument("--diginetica", action=argparse.BooleanOptionalAction, default=True,
                   help="also time DIGINETICA (each variant + data=diginetica); skipped when the split is absent")
    p.add_argument("--serving", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure serving: recommendations/s at batch size 1 and 256 (bench/bench_serving.py)")
    p.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure sweep throughput: one worker x all threads vs one single-thread worker a core")
    p.add_argument("--throughput-epochs", type=int, default=3, help="epochs per throughput process (>= 2)")
    p.add_argument("--diginetica-batches", type=int, default=40,
                   help="DIGINETICA train batches timed per epoch (the epoch time is scaled from them)")
    p.add_argument("--clicks", action=argparse.BooleanOptionalAction, default=True,
                   help="a YOOCHOOSE-size click log through data=clicks (bench/bench_clicks.py; --quick: 1 M clicks)")
    p.add_argument("--note", default="", help="one line saying what changed, for bench/HISTORY.md")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--no-history", action="store_true", help="do not append to bench/HISTORY.md")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every variant")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = parse_variants(args.variant, args.overrides)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git": git_rev(),
        "command": "python -m bench.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_before": loadavg(),
        "note": args.note,
    }
    if args.collect:
        report.update(speed={}, diginetica="not run (--collect)", serving=None, throughput=None,
                      accuracy=collect_accuracy(args.collect))
        return finish(args, report)
    report["speed"] = {} if args.accuracy_only else measure(args, variants)
    report["diginetica"] = sessions(args, variants) if args.diginetica else "not run (--no-diginetica)"
    report["serving"] = measure_serving(quick=args.quick) if args.serving else None
    report["clicks"] = measure_clicks(args) if args.clicks else "not run (--no-clicks)"
    report["throughput"] = sweep_throughput(args) if args.throughput and not args.accuracy_only else None
    if args.accuracy or args.accuracy_only:
        report["accuracy"] = accuracy(args, variants, args.out)
    return finish(args, report)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    """Write report.json / report.md, append the entry to bench/HISTORY.md and print it."""
    report["threads"] = torch.get_num_threads()
    report["peak_rss_mib"] = peak_rss_mib()
    report["load_after"] = loadavg()
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report) if report["speed"] else markdown({**report, "speed": {}})
    (args.out / "report.md").write_text(md)
    if not args.no_history:
        if not HISTORY.exists():
            HISTORY.write_text("# Benchmark history\n\nOne entry per `python -m bench.bench` run (newest last); "
                               "figures are from a shared 2-core machine unless the entry says otherwise: compare "
                               "variants within an entry, not across entries.\n\n")
        with HISTORY.open("a") as fh:
            fh.write("\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_or_exit(main))  # a bad config or data: one paragraph, exit 2
