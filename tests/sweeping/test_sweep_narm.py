"""sweep.py end to end on NARM: real trainings as trials, results files, resume, hyper.test."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import yaml

from tests.helpers import REPO, tiny_overrides

SWEEP = str(REPO / "sweep.py")


def _sweep(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, SWEEP, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_two_trial_sweep_then_resume_with_a_hyper_test_file(tiny_root, tmp_path) -> None:
    hyper = tmp_path / "hyper.test"
    hyper.write_text("learning_rate choice [0.01,0.001]\nhidden_size choice [64]\n"
                     "dropout_probs choice ['[0.25,0.5]','[0.2,0.2]']\n")
    tiny = [a for a in tiny_overrides(tiny_root, "epochs=2") if not a.startswith("model.hidden_size")]
    common = [*tiny, "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=random",
              "hydra.sweep.dir=multirun/sweep"]
    first = _sweep(tmp_path, f"--params-file={hyper}", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "sweep"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert len(rows) == 2 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {r["hidden_size"] for r in rows} == {"64"}
    assert results["best_value"] == max(float(r["value"]) for r in rows) > 0
    # every trial is a real training run with its own folder, resolved config and results
    for job in ("0", "1"):
        assert (sweep_dir / job / "results.json").exists()
        cfg = yaml.safe_load((sweep_dir / job / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["hidden_size"] == 64 and cfg["optuna"]["trial_id"] is not None
    # the same command with a larger budget continues the study (SQLite under ./optuna) to 3 in total
    second = _sweep(tmp_path, f"--params-file={hyper}", *common[:-2], "hydra.sweeper.n_trials=3",
                    "hydra/sweeper/sampler=random", "hydra.sweep.dir=multirun/again")
    assert second.returncode == 0, second.stderr[-3000:]
    again = yaml.safe_load((tmp_path / "multirun" / "again" / "optimization_results.yaml").read_text())
    assert again["n_trials"]["finished"] == 3
    # continued, not begun anew: this sitting ran one trial, and the first sitting's two are still the study's
    new_jobs = [d for d in (tmp_path / "multirun" / "again").iterdir() if d.is_dir() and d.name.isdigit()]
    assert len(new_jobs) == 1
    rows_again = {r["number"]: r for r in csv.DictReader((tmp_path / "multirun" / "again" / "trials.csv").open())}
    assert {n: rows_again[r["number"]]["value"] for n, r in enumerate(rows)} == {
        n: r["value"] for n, r in enumerate(rows)}


def test_each_trial_is_its_own_wandb_run_plus_one_summary_run(tiny_root, tmp_path) -> None:
    from tests.wandb_records import offline_runs

    env_home = tmp_path / "wandb-home"
    tiny = [a for a in tiny_overrides(tiny_root, "epochs=1") if not a.startswith("logger=")]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(env_home),
           "WANDB_CACHE_DIR": str(env_home), "WANDB_DATA_DIR": str(env_home)}
    env.pop("WANDB_API_KEY", None)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, SWEEP, "-m", *tiny, "logger=wandb", "learning_rate=0.01,0.001", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.study_name=wb", "hydra.sweep.dir=multirun/wb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "wb"
    runs = offline_runs(sweep_dir / "wandb")  # one folder holds the whole sweep: `wandb leet <sweep dir>`
    assert len(runs) == 3 and not list(sweep_dir.glob("[0-9]*/wandb")), "no trial keeps a wandb/ of its own"
    trials = sorted((r for r in runs if r.job_type == "train"), key=lambda r: r.name)
    summary = [r for r in runs if r.job_type == "sweep-summary"]
    assert [r.name for r in trials] == ["trial-0", "trial-1"]
    # wandb leet lists runs by folder, offline-run-<time>-<run id>: the id starts with the run's name
    folders = sorted(p.name for p in (sweep_dir / "wandb").glob("offline-run-*"))
    assert [f.split("-", 3)[-1][:8] for f in folders] == ["trial-0-", "trial-1-", "wb-summa"], folders
    assert all(r.run_id.startswith(f"{r.name}-") and len(r.run_id) == len(r.name) + 9 for r in runs)
    assert "3 offline runs are in multirun/wb/wandb: browse them with `wandb leet multirun/wb/wandb`" in proc.stdout
    assert all(r.group == "wb" and "complete" in r.tags and r.exit_code == 0 for r in trials)
    assert len(summary) == 1 and summary[0].group == "wb" and summary[0].exit_code == 0
    rows = list(csv.DictReader((tmp_path / "multirun" / "wb" / "trials.csv").open()))
    assert sorted(r["wandb_run_id"] for r in rows) == sorted(r.run_id for r in trials) != ["", ""]
    # the summary compares the trials: every trial's valid curve (from the study's reports) and best values
    curves = list(csv.DictReader((sweep_dir / "curves.csv").open()))
    assert sorted({r["number"] for r in curves}) == ["0", "1"] and all(r["step"] == "0" for r in curves)
    logged = {k: v for row in summary[0].history for k, v in row.items()}
    assert {"trial", "trial/valid MRR@10", "trial/best valid MRR@10 so far", "trial/learning_rate", "epoch",
            "curve/trial-0", "curve/trial-1"} <= set(logged), sorted(logged)
    assert summary[0].summary["trials"]["nrows"] == 2


def test_typos_and_bad_values_fail_before_trial_0_and_leave_nothing(tiny_root, tmp_path) -> None:
    tiny = tiny_overrides(tiny_root, "epochs=1")
    for bad, said in (("learnig_rate=0.01,0.001", "learnig_rate is not a key of this config (did you mean "
                                                  "learning_rate?)"),
                      ("learning_rate=0.01,-1", "learning_rate is -1; expected a number > 0"),
                      ("model.hidden_size=range(0,3)", "model.hidden_size is 0; expected a positive integer"),
                      ("data.dataset=tiny,tiyn", "data.dataset='tiyn': no atomic file found")):
        proc = _sweep(tmp_path, *tiny, bad, "hydra.sweeper.params=null")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "error: hydra.sweeper: a trial of this search space would not run" in proc.stderr
        assert said in proc.stderr and "Nothing was started" in proc.stderr
    assert not (tmp_path / "optuna").exists() or not list((tmp_path / "optuna").glob("*.db")), "no study created"
    assert not (tmp_path / "multirun").exists(), "no sweep folder"


def test_seeds_and_the_confirm_step_on_a_tiny_narm_sweep(tiny_root, tmp_path) -> None:
    """Two seeds a trial, then the best trial and the default config retrained over two seeds: the confirm
    table holds NARM's test metrics with mean, std, CI and the paired comparison; W&B gets it as a table."""
    from tests.wandb_records import offline_runs

    env_home = tmp_path / "wandb-home"
    tiny = [a for a in tiny_overrides(tiny_root, "epochs=2") if not a.startswith("logger=")]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(env_home),
           "WANDB_CACHE_DIR": str(env_home), "WANDB_DATA_DIR": str(env_home)}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, SWEEP, "-m", *tiny, "logger=wandb", "learning_rate=0.01,0.001", "hydra.sweeper.params=null",
         "hydra.sweeper.seeds_per_trial=2", "hydra.sweeper.confirm_top=1", "hydra.sweeper.confirm_seeds=2",
         "hydra.sweep.dir=multirun/c"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "multirun" / "c"
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    assert len([p for p in out.iterdir() if p.name.isdigit()]) == 2 * 2 + 2 * 2  # trials x seeds + confirm
    rows = list(csv.DictReader((out / "confirm.csv").open()))
    assert {r["config"] for r in rows} == {"default"} | {f"trial {t['number']}" for t in trials
                                                         if float(t["value"]) == max(float(x["value"]) for x in trials)}
    assert {r["metric"] for r in rows} >= {"mrr@10", "ndcg@10", "recall@10"}
    for row in rows:
        assert int(row["n"]) == 2 and float(row["ci95_low"]) <= float(row["mean"]) <= float(row["ci95_high"])
    assert "| default | (defaults) | mrr@10 | 2 |" in (out / "confirm.md").read_text()
    assert "Confirm step" in proc.stdout + proc.stderr
    (summary,) = [r for r in offline_runs(out / "wandb") if r.job_type == "sweep-summary"]
    assert summary.summary["confirm"]["nrows"] == len(rows)
