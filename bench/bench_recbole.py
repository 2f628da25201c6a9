"""``make bench-recbole``: RecBole 1.2.1 against this project, per ml-100k training epoch, side by side.

Every speed claim against RecBole in this repository comes from this script. It runs, in separate processes
and alternating round by round (so a noisy shared host hurts all alike):

  * ``recbole``: the seed's example, ``run_recbole(model='NARM', dataset='ml-100k',
    config_dict={'train_neg_sample_args': None})``, in RecBole's own venv (``make recbole-venv``), timing
    ``Trainer._train_epoch`` (``bench/recbole/epoch_recbole.py``), started as its users start it: without
    the glibc tunables this project's Makefile exports (``recbole-same-env``: with them; they speed RecBole up
    too, so both are worth a line);
  * ``ours-default``: ``python train.py``'s defaults (length-bucketed batches, bf16 where the CPU has it);
  * ``ours-exact``: RecBole's exact path (``experiment=recbole_exact``: plain batches, fp32);

each timing ``--epochs`` (3) training epochs. Ours is started as its users start it (``python train.py
epochs=N``, none of this project's environment variables: the program sets what it needs itself) and its epochs'
training seconds come from the run's ``results.json``. The figure compared is each process's mean epoch, its first
included (the first pays one-off costs: our GRU's kernels compile; caches warm; a sweep pays it in every trial),
the median over the rounds; the steady epoch (the median after each process's first) and the first epoch are
reported beside it. Writes ``bench/out/recbole.{json,md}`` and a dated entry in ``bench/HISTORY.md`` with the CPU
model, the load before and after, and every round's figures. Quote ratios from one run only.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from narm_lightning.training.hostcheck import cpu_flags, cpu_model  # noqa: E402

RECBOLE_PY = ROOT / ".venv-recbole" / "bin" / "python"
SYSTEMS = {
    "recbole": [],
    "ours-default": [],
    "ours-exact": ["experiment=recbole_exact"],
}
EXTRA_SYSTEMS = {  # before/after checks of one change, selectable with --systems
    "recbole-same-env": [],  # RecBole with this project's GLIBC_TUNABLES (they speed it up too)
    "ours-default-torch-gru": ["model.gru_impl=torch"],  # nn.GRU instead of the fused GRU
    "ours-default-make-env": [],  # the defaults in the caller's environment (`make train`'s GLIBC_TUNABLES kept)
    "ours-exact-torch-gru": ["experiment=recbole_exact", "model.gru_impl=torch"],
    "ours-default-hugetlb": [],  # the defaults with glibc's huge pages on (the program adds its heap tunables)
}
SYSTEM_ENV = {  # what a system's process gets in its environment besides the caller's
    "ours-default-hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run_one(system: str, epochs: int, data_path: str, overrides: list[str]) -> dict:
    """One process of one system; its JSON line."""
    if system.startswith("recbole"):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "bench" / "recbole" / "stubs"),
               "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        if system == "recbole":  # as its users run it: no glibc tunables (the Makefile exports ours)
            env.pop("GLIBC_TUNABLES", None)
        cmd = [str(RECBOLE_PY), "-m", "bench.recbole.epoch_recbole", "--epochs", str(epochs),
               "--data-path", data_path]
    else:
        return run_ours(system, epochs, data_path, overrides)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench-recbole: {system} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


OUR_ENV = ("GLIBC_TUNABLES", "NARM_KEEP_ENV")  # what this project's Makefile or a developer may have set


def run_ours(system: str, epochs: int, data_path: str, overrides: list[str]) -> dict:
    """One process of ours, started as users start it: ``python train.py epochs=N`` with none of this project's
    environment variables (the program sets what it needs itself), its own run folder; the epochs' training
    seconds (what RecBole's ``_train_epoch`` times) come from the run's ``results.json``."""
    import importlib.metadata
    import tempfile

    keep = system.endswith("-make-env")  # as `make train` starts it: the Makefile's environment kept
    env = dict(os.environ) if keep else {k: v for k, v in os.environ.items() if k not in OUR_ENV}
    env.update(SYSTEM_ENV.get(system, {}))
    with tempfile.TemporaryDirectory(prefix="bench-recbole-") as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), f"epochs={epochs}", f"stopping_step={max(epochs, 10)}",
               f"data.extra_roots=[{data_path}]", f"hydra.run.dir={tmp}/run",
               *{**SYSTEMS, **EXTRA_SYSTEMS}[system], *overrides]
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, check=False)
        process_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"bench-recbole: {system} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
    seconds = results["train_epoch_seconds"]
    return {"system": system, "overrides": overrides, "torch": importlib.metadata.version("torch"),
            "precision": results["precision"], "epoch_s": seconds, "epoch_with_valid_s": results["epoch_seconds"],
            "setup_s": process_s - sum(results["epoch_seconds"]), "process_s": process_s,
            "glibc_tunables": results.get("glibc_tunables", "")}


def steady(epochs: list[float]) -> list[float]:
    """The epochs compared: all after the process's first, or the only one."""
    return epochs[1:] or epochs


def markdown(report: dict) -> str:
    systems = report["systems"]
    base = systems.get("recbole")
    same = systems.get("recbole-same-env")
    lines = [f"### {report['date']} — {report['git']} — bench-recbole — {report['cpu']} ({report['cores']} cores"
             f"{', AMX' if report['amx'] else ''}), load {report['load_before']} -> {report['load_after']}", "",
             f"`{report['command']}`; {report['rounds']} rounds x {report['epochs']} epoch(s) per process, processes "
             "alternating; " + (f"RecBole {base['runs'][0].get('recbole')}, " if base else "")
             + "torch " + next(iter(systems.values()))["runs"][0].get("torch", "?"), "",
             "Ours started as users start it: `python train.py epochs=N` with no environment variable of this project"
             f" (the caller's GLIBC_TUNABLES, `{report['glibc_tunables'] or 'unset'}`, removed; the program sets its "
             "own); `recbole` without them, `recbole-same-env` with them. Training seconds of each epoch (RecBole's "
             "`_train_epoch`; ours from `results.json`, validation apart).", "",
             "| system | mean epoch s (first included) | steady epoch s | first epoch s | every epoch s | vs RecBole, "
             "mean | vs RecBole, steady | vs RecBole same env, mean |",
             "|---|---|---|---|---|---|---|---|"]

    def ratio(ref: dict | None, entry: dict, key: str) -> str:
        return "-" if ref is None else f"{ref[key] / entry[key]:.2f}x"

    for name, entry in systems.items():
        every = ", ".join(f"{s:.1f}" for run in entry["runs"] for s in run["epoch_s"])
        extra = f" ({entry['runs'][0].get('precision')})" if not name.startswith("recbole") else ""
        lines.append(f"| `{name}`{extra} | {entry['mean_epoch_s']:.1f} | {entry['median_epoch_s']:.1f} | "
                     f"{entry['median_first_epoch_s']:.1f} | {every} | {ratio(base, entry, 'mean_epoch_s')} | "
                     f"{ratio(base, entry, 'median_epoch_s')} | {ratio(same, entry, 'mean_epoch_s')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (one process per system each)")
    p.add_argument("--epochs", type=int, default=3, help="timed training epochs per process (the first is "
                                                          "reported apart too when there are two or more)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated, from " + ", ".join([*SYSTEMS, *EXTRA_SYSTEMS]))
    p.add_argument("--data-path", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--no-history", action="store_true", help="do not append to bench/HISTORY.md")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for our systems (checks on small data only: a "
                                                "figure against RecBole is on its ml-100k defaults)")
    args = p.parse_args(argv)
    systems = args.systems.split(",")
    unknown = [s for s in systems if s not in SYSTEMS and s not in EXTRA_SYSTEMS]
    if unknown:
        raise SystemExit(f"bench-recbole: --systems {', '.join(unknown)} unknown; expected some of "
                         f"{', '.join([*SYSTEMS, *EXTRA_SYSTEMS])}.")
    if any(s.startswith("recbole") for s in systems) and not RECBOLE_PY.exists():
        raise SystemExit("bench-recbole: RecBole's venv is missing; run `make recbole-venv` first.")
    load_before = loadavg()
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(args.rounds):
        for system in systems:
            result = run_one(system, args.epochs, args.data_path, args.overrides)
            runs[system].append(result)
            print(f"round {r + 1}/{args.rounds} {system:<13} epoch " + ", ".join(f"{s:.1f}" for s in result["epoch_s"])
                  + f" s (setup {result['setup_s']:.1f} s)", flush=True)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git": git.strip(),
        "cpu": cpu_model(), "cores": os.cpu_count(), "amx": "amx_bf16" in cpu_flags(),
        "load_before": load_before, "load_after": loadavg(), "rounds": args.rounds, "epochs": args.epochs,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "command": "python -m bench.bench_recbole " + " ".join(argv if argv is not None else sys.argv[1:]),
        "systems": {s: {"mean_epoch_s": statistics.median(statistics.fmean(run["epoch_s"]) for run in runs[s]),
                        "median_epoch_s": statistics.median(x for run in runs[s] for x in steady(run["epoch_s"])),
                        "median_first_epoch_s": statistics.median(run["epoch_s"][0] for run in runs[s]),
                        "runs": runs[s]} for s in systems},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recbole.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "recbole.md").write_text(text)
    if not args.no_history:
        with open(ROOT / "bench" / "HISTORY.md", "a") as history:
            history.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
