"""``make bench-hugepages``: what glibc's huge-page tunable is worth for a CPU training step on this host.

A NARM step allocates ``batch x n_items`` score and gradient blocks (88 MiB each at 512 x 43,098, the
DIGINETICA shape). Where transparent huge pages are ``madvise``, glibc's big blocks are faulted in 4 KiB at a
time unless the process starts with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (see
``narm_lightning/training/hostcheck.py``). A tunable is read only at process start, so each setting runs in its own
child process; the settings alternate over ``--rounds`` so a noisy shared machine hurts them alike.

Each child times a bare forward + CE over all items + backward + Adam step of the paper-sized NARM on
random sessions (no Lightning, no data loading) and counts its minor page faults per step. Writes
``bench/out/hugepages.{json,md}`` and prints the table. Every figure is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from narm_lightning.io import write_text_atomic  # noqa: E402
from narm_lightning.training.hostcheck import HUGETLB_TUNABLE, thp_mode  # noqa: E402

OUT = ROOT / "bench" / "out"
SETTINGS = ("without", "with")  # the hugetlb tunable, in each child's GLIBC_TUNABLES


def child_env(setting: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the hugetlb tunable removed ("without": the Makefile exports it) or added, others kept."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb")]
    if setting == "with":
        tunables.append(HUGETLB_TUNABLE)
    out = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        out["GLIBC_TUNABLES"] = ":".join(tunables)
    return out


def step_times(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: median ms and minor page faults per training step (after ``--warmup`` steps)."""
    import torch
    import torch.nn.functional as F

    from narm_lightning.model.narm import NARM

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = NARM(args.n_items, args.embedding_size, args.hidden_size, 1, [0.25, 0.5]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seq = torch.randint(1, args.n_items, (args.batch, args.seq_len))
    length = torch.randint(1, args.seq_len + 1, (args.batch,))
    target = torch.randint(1, args.n_items, (args.batch,))
    times: list[float] = []
    faults = 0
    for i in range(args.warmup + args.steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        loss = F.cross_entropy(model(seq, length) @ model.item_embedding.weight.t(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"median_ms": 1000 * statistics.median(times), "steps": len(times),
            "minor_faults_per_step": faults / len(times), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "threads": torch.get_num_threads()}


def run_child(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_hugepages", "--child", "--steps", str(args.steps),
           "--warmup", str(args.warmup),
           "--n-items", str(args.n_items), "--batch", str(args.batch), "--seq-len", str(args.seq_len),
           "--embedding-size", str(args.embedding_size), "--hidden-size", str(args.hidden_size),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=child_env(setting, dict(os.environ)), cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_hugepages: the '{setting}' child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict[str, Any]) -> str:
    a = report["settings"]
    rows = [f"| `{r['glibc_tunables'] or '(unset)'}` | {r['median_ms']:.0f} | {r['minor_faults_per_step']:,.0f} | "
            f"{', '.join(f'{m:.0f}' for m in r['round_medians_ms'])} |" for r in a.values()]
    return "\n".join([
        f"## Huge pages ({report['date']}, THP `{report['thp_mode']}`, {report['threads']} threads)",
        "",
        f"Bare NARM forward + CE + backward + Adam step, batch {report['batch']} x {report['n_items']:,} items, "
        f"{report['steps']} timed steps per round, {report['rounds']} alternating rounds per setting.",
        "",
        "| GLIBC_TUNABLES | median ms/step | minor faults/step | round medians (ms) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Speed-up with the tunable: {report['speedup']:.2f}x.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per child")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, kernels)")
    p.add_argument("--rounds", type=int, default=2, help="children per setting, alternating")
    p.add_argument("--n-items", type=int, default=43_098, help="item rows incl. padding (DIGINETICA: 43,098)")
    p.add_argument("--batch", type=int, default=512, help="sessions per step (the paper's batch)")
    p.add_argument("--seq-len", type=int, default=5, help="padded session length (DIGINETICA's mean is 4.1)")
    p.add_argument("--embedding-size", type=int, default=50)
    p.add_argument("--hidden-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")
    if args.child:
        print(json.dumps(step_times(args)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            runs[setting].append(run_child(setting, args))
    settings = {s: {"median_ms": statistics.median(r["median_ms"] for r in rs),
                    "minor_faults_per_step": statistics.median(r["minor_faults_per_step"] for r in rs),
                    "round_medians_ms": [r["median_ms"] for r in rs],
                    "glibc_tunables": rs[0]["glibc_tunables"]} for s, rs in runs.items()}
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "thp_mode": thp_mode() or "unknown",
              "threads": runs[SETTINGS[0]][0]["threads"], "batch": args.batch, "n_items": args.n_items,
              "steps": args.steps, "rounds": args.rounds, "settings": settings,
              "speedup": settings["without"]["median_ms"] / settings["with"]["median_ms"]}
    md = markdown(report)
    write_text_atomic(args.out / "hugepages.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / "hugepages.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
