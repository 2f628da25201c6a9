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
model, the load before and after, and every round's figures; a run of the issue's measure (RecBole and our defaults,
3 or more epochs a process, no overrides) also replaces its host kind's row in the table at the top of
``bench/HISTORY.md`` (one row per host kind: Intel with AMX, AMD Zen 4, ...). Quote ratios from one run only.
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

from narm_lightning.io import write_text_atomic  # noqa: E402
from narm_lightning.training.hostcheck import cpu_flags, cpu_kind, cpu_model  # noqa: E402

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


HISTORY = ROOT / "bench" / "HISTORY.md"
HOST_KINDS_START, HOST_KINDS_END = "<!-- host kinds: start -->", "<!-- host kinds: end -->"
HOST_KINDS_SECTION = (
    "## `make bench-recbole` by host kind\n\n"
    "The latest side-by-side run of the issue-36 measure on each host kind: RecBole 1.2.1 and our defaults, 3-epoch "
    "processes started as users start them, training seconds per ml-100k epoch (mean of a process with its first "
    "epoch / steady / first). `bench/bench_recbole.py` replaces its host kind's row after each such run; its dated "
    "entry below has every epoch.\n\n")
HOST_KINDS_HEADER = ("| host kind | date, commit | CPU (`lscpu`), cores; bf16 flags | load before -> after | "
                     "RecBole mean / steady / first s | ours mean / steady / first s | vs RecBole, mean (steady) | "
                     "our first epoch / steady |\n|---|---|---|---|---|---|---|---|\n")
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def host_kind_row(report: dict) -> str | None:
    """The report's row of the host-kind table, or None when the run is not the issue's measure (RecBole beside our
    defaults, 3 or more epochs a process, ml-100k's defaults)."""
    systems = report["systems"]
    if "recbole" not in systems or "ours-default" not in systems or report["epochs"] < 3 or report["overrides"]:
        return None
    base, ours = systems["recbole"], systems["ours-default"]

    def figures(entry: dict) -> str:
        return f"{entry['mean_epoch_s']:.1f} / {entry['median_epoch_s']:.1f} / {entry['median_first_epoch_s']:.1f}"

    return (f"| {report['cpu_kind']} | {report['date']}, {report['git']} | \"{report['cpu']}\", {report['cores']} "
            f"cores; {' '.join(report['bf16_flags']) or 'none'} | {report['load_before']} -> {report['load_after']} | "
            f"{figures(base)} | {figures(ours)} | **{base['mean_epoch_s'] / ours['mean_epoch_s']:.2f}x** "
            f"({base['median_epoch_s'] / ours['median_epoch_s']:.2f}x) | "
            f"{ours['median_first_epoch_s'] / ours['median_epoch_s']:.2f}x |")


def with_host_kind_row(history: str, kind: str, row: str) -> str:
    """``history`` with ``row`` as its host kind's row of the table at the top (the kind's earlier row replaced in
    place, another kind's kept; the table made before the first entry if there is none)."""
    if HOST_KINDS_START not in history:
        at = history.find("\n### ")
        at = len(history) if at < 0 else at + 1
        table = f"{HOST_KINDS_SECTION}{HOST_KINDS_START}\n{HOST_KINDS_HEADER}{row}\n{HOST_KINDS_END}\n\n"
        return history[:at] + table + history[at:]
    head, rest = history.split(HOST_KINDS_START, 1)
    table, tail = rest.split(HOST_KINDS_END, 1)
    rows = [line for line in table.strip().splitlines()[2:] if line.strip()]
    mine = [i for i, line in enumerate(rows) if line.split("|")[1].strip() == kind]
    if mine:
        rows[mine[0]] = row
        rows = [line for i, line in enumerate(rows) if i not in mine[1:]]
    else:
        rows.append(row)
    body = "".join(r + "\n" for r in rows)
    return f"{head}{HOST_KINDS_START}\n{HOST_KINDS_HEADER}{body}{HOST_KINDS_END}{tail}"


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
        "cpu": cpu_model(), "cores": os.cpu_count(), "amx": "amx_bf16" in cpu_flags(), "cpu_kind": cpu_kind(),
        "bf16_flags": [f for f in BF16_FLAGS if f in cpu_flags()], "overrides": args.overrides,
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
        history = HISTORY.read_text() + "\n" + text
        row = host_kind_row(report)
        write_text_atomic(HISTORY, with_host_kind_row(history, report["cpu_kind"], row) if row else history)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
