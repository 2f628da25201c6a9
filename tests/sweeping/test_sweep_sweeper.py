"""End-to-end sweeps of the toy Hydra app (real subprocesses, SQLite storage in tmp_path)."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_parallel_workers
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from narm_lightning.errors import ConfigError
from narm_lightning.sweeping.space import parse_search_space
from narm_lightning.sweeping.study import WORKER_ATTR, count_trials, fail_dead_workers_trials
from narm_lightning.sweeping.sweeper import OptunaSweeperImpl

RunToy = Callable[..., subprocess.CompletedProcess[str]]
LoadStudy = Callable[[], optuna.Study]


def sweep_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "multirun" / name


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_trial_sweep_writes_results_and_rerun_resumes(
    run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path
) -> None:
    proc = run_toy("hydra.sweep.dir=multirun/a", "hydra.sweeper.plots=true", "y=1")
    out = sweep_dir(tmp_path, "a")
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    study = load_toy_study()
    assert results["name"] == "toy" and results["direction"] == "minimize"
    assert results["n_trials"]["finished"] == results["n_trials"]["complete"] == 2
    assert results["best_value"] == study.best_value == min(t.value for t in study.trials)
    assert results["best_params"] == study.best_params
    rows = read_csv(out / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    # The objective really ran with the sampled x (fixed y=1 passed through): value = (x-2)^2 + 1.
    assert all(float(r["value"]) == (float(r["x"]) - 2) ** 2 + 1 for r in rows)
    assert (out / "optimization_history.html").stat().st_size > 1000
    parallel = (out / "parallel_coordinate.html").read_text()
    assert '"colorscale":[[0.0,"#440154"]' in parallel.replace(" ", ""), "Viridis: no white line on white"
    assert "rgb(247,251,255)" not in parallel.replace(" ", "").replace(".0", "")
    best = " ".join(f"{k}={v}" for k, v in study.best_params.items())
    assert f"Best trial: #{study.best_trial.number} value {study.best_value:.4g} ({best})" in proc.stderr + proc.stdout
    # Each trial got its identity as overrides.
    overrides = yaml.safe_load((out / "0" / ".hydra" / "overrides.yaml").read_text())
    assert "++optuna.study_name='toy'" in overrides and any(
        o.startswith("++optuna.trial_id=") for o in overrides
    )

    run_toy("hydra.sweep.dir=multirun/b", "y=1")  # same command again: the study is already done
    assert len(load_toy_study().trials) == 2
    run_toy("hydra.sweep.dir=multirun/c", "y=1", "hydra.sweeper.n_trials=3")  # target raised: one more
    assert [t.state for t in load_toy_study().trials] == [TrialState.COMPLETE] * 3


def test_failed_trial_is_recorded_and_sweep_goes_on(
    run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path
) -> None:
    proc = run_toy(
        "hydra.sweep.dir=multirun/f",
        "hydra/sweeper/sampler=grid",
        "x=1,2,3",
        "fail_x=1",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.34",
    )
    console = proc.stdout + proc.stderr
    # the trial's own line says it failed; Hydra's dump of every override (the storage URL too) stays off
    assert "FAILED: ValueError: toy failure for x=1" in console and "Error executing job" not in console, console
    trials = {t.params["x"]: t for t in load_toy_study().trials}
    assert sorted(trials) == [1, 2, 3]  # grid: every point exactly once
    assert trials[1].state == TrialState.FAIL
    assert "ValueError: toy failure for x=1" in trials[1].user_attrs["error"]
    assert trials[2].state == trials[3].state == TrialState.COMPLETE
    rows = {r["x"]: r for r in read_csv(sweep_dir(tmp_path, "f") / "trials.csv")}
    assert "toy failure for x=1" in rows["1"]["error"] and rows["2"]["error"] == ""


def test_max_failure_rate_stops_the_sweep(run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path) -> None:
    proc = run_toy(
        "hydra.sweep.dir=multirun/m",
        "mode=nonfinite",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.max_failure_rate=0.25",
        check=False,
    )
    assert proc.returncode != 0
    assert "max_failure_rate" in proc.stderr and "3 of 8 trials failed" in proc.stderr
    trials = load_toy_study().trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert "non-finite" in trials[0].user_attrs["error"]
    # The results are still written for an aborted sweep.
    assert len(read_csv(sweep_dir(tmp_path, "m") / "trials.csv")) == 3


def test_median_pruner_prunes_a_hopeless_trial(run_toy: RunToy, load_toy_study: LoadStudy) -> None:
    common = ["curve=true", "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"]
    run_toy("hydra.sweep.dir=multirun/p1", *common, "x=1,2", "hydra/sweeper/sampler=grid")
    out = run_toy(
        "hydra.sweep.dir=multirun/p2", *common, "x=2", "hopeless=choice(true)", "hydra.sweeper.n_trials=3"
    )
    # Optuna gives a pruned trial its last value: the progress line says it was pruned, not just "value"
    assert re.search(r"trial 3/3 hopeless=True: PRUNED at step 0 \(value [\d.]+\)", out.stdout + out.stderr)
    trials = load_toy_study().trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    assert trials[2].params == {"hopeless": True} and trials[2].state == TrialState.PRUNED
    assert list(trials[2].intermediate_values) == [0]  # stopped at the first report


def test_two_processes_share_one_study_without_duplicates(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = [
        "hydra/sweeper/sampler=grid",
        "x=0,1,2,3",
        "size=small,large",
        "sleep=0.05",
        "hydra.sweeper.n_trials=8",
        f"hydra.sweeper.storage={storage}",
    ]
    run_parallel_workers(tmp_path, args)
    trials = optuna.load_study(study_name="toy", storage=storage).trials
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.number for t in trials}) == 8
    assert len({(t.params["x"], t.params["size"]) for t in trials}) == 8  # the whole grid, once each


def test_stale_running_trial_is_failed_and_its_slot_rerun(
    run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path
) -> None:
    (tmp_path / "optuna").mkdir()
    url = f"sqlite:///{tmp_path / 'optuna' / 'toy.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="toy", storage=storage)
    with pytest.warns(UserWarning):  # Optuna: heartbeat outside optimize
        dead = study.ask({"x": CategoricalDistribution([0, 1, 2, 3])})
    storage.record_heartbeat(dead._trial_id)  # ... and then its worker was killed
    time.sleep(2.2)
    run_toy(
        "hydra.sweep.dir=multirun/s", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=1"
    )
    trials = load_toy_study().trials
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == dead.params and retried[0].state == TrialState.COMPLETE
    counts = count_trials(load_toy_study())
    assert (counts.complete, counts.failed, counts.stale) == (2, 0, 1)  # the stale one does not count
    rows = read_csv(sweep_dir(tmp_path, "s") / "trials.csv")
    assert rows[0]["error"].startswith("stale")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "up"}, "hydra.sweeper.direction"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials"),
        ({"max_failure_rate": 2.0}, "hydra.sweeper.max_failure_rate"),
        ({"direction": ["minimize", "maximize"]}, r"direction is \['minimize', 'maximize'\]; expected minimize or "
         r"maximize \(one objective: multi-objective studies are not supported\)"),
        ({"n_trials": 0}, r"hydra.sweeper.n_trials is 0; expected null or a positive integer\."),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs is 0; expected a positive integer"),
        ({"max_failure_rate": -0.1}, r"max_failure_rate is -0.1; expected a number in \[0, 1\]"),
        ({"seeds_per_trial": True}, "seeds_per_trial is True; expected a positive integer"),
        ({"confirm_top": -1}, "confirm_top is -1; expected an integer >= 0"),
        ({"confirm_seeds": 0}, "confirm_seeds is 0; expected a positive integer"),
        ({"heartbeat_interval": 0}, "heartbeat_interval is 0; expected null or a positive integer"),
        ({"plots": "yes"}, "plots is 'yes'; expected true or false"),
        ({"identity_ignore": "seed"}, "identity_ignore is 'seed'; expected a list of key names"),
        ({"seed_key": ""}, "seed_key is ''; expected a non-empty string"),
        ({"n_jobs": 0, "confirm_top": -1}, "n_jobs is 0; expected a positive integer; hydra.sweeper.confirm_top"),
        ({"n_trails": 3}, r"hydra.sweeper has unknown key\(s\) \['n_trails'\]; expected some of \["),
    ],
)
def test_bad_sweeper_config_raises_config_error(kwargs: dict[str, object], match: str) -> None:
    """The sweeper's keys are checked as the app's are: by the rules declared once in sweeping/config.py."""
    with pytest.raises(ConfigError, match=match):
        OptunaSweeperImpl(sampler={"_target_": "optuna.samplers.TPESampler"}, pruner=None, **kwargs)


def test_every_sweeper_key_is_declared_with_a_rule_and_the_defaults_pass_them() -> None:
    from narm_lightning.config.rules import keys_of, schema_problems
    from narm_lightning.sweeping.config import OptunaSweeperConfig

    keys = list(keys_of(OptunaSweeperConfig))
    assert [k.name for k in keys if k.rule is None] == ["params"]  # the search space: the space's own grammar
    assert schema_problems({k.name: k.default for k in keys}, OptunaSweeperConfig) == []
    sweeper = OptunaSweeperImpl(sampler={"_target_": "optuna.samplers.TPESampler"}, pruner=None)
    assert (sweeper.direction, sweeper.n_trials, sweeper.n_jobs, sweeper.max_failure_rate, sweeper.seed_key) == (
        "minimize", None, 1, 0.25, "seed")
    assert OptunaSweeperImpl(sampler={}, pruner=None, direction="MAXIMIZE").direction == "maximize"


def test_grid_with_interval_and_unknown_sampler_fail_clearly() -> None:
    space = parse_search_space({"x": "interval(0,3)"}, [])
    from narm_lightning.sweeping.samplers import build_sampler

    with pytest.raises(ConfigError, match="param 'x' is continuous"):
        build_sampler({"_target_": "optuna.samplers.GridSampler", "seed": 0}, space, None)
    with pytest.raises(ConfigError, match="hydra.sweeper.sampler._target_"):
        build_sampler({"_target_": "os.system"}, space, None)


def test_a_rerun_into_the_same_sweep_dir_numbers_jobs_after_the_existing_ones(tmp_path) -> None:
    from narm_lightning.sweeping.jobs import next_job_index

    assert next_job_index(tmp_path / "absent") == 0
    for name in ("0", "1", "7", "wandb", "notes.txt"):
        (tmp_path / name).mkdir() if name != "notes.txt" else (tmp_path / name).write_text("x")
    assert next_job_index(tmp_path) == 8


@pytest.mark.parametrize(("option", "args"), [
    ("sampler=grid", ["x=0,1"]),
    ("sampler=random", ["x=interval(0,3)"]),
    ("sampler=tpe", ["x=interval(0,3)"]),
    ("sampler=cmaes", ["x=interval(0,3)", "y=range(0,3)"]),  # the categorical falls back to random
    ("pruner=median", ["x=0,1", "curve=true"]),
    ("pruner=hyperband", ["x=0,1", "curve=true"]),
    ("pruner=nop", ["x=0,1", "curve=true"]),
])
def test_every_documented_sampler_and_pruner_runs_a_sweep(run_toy: RunToy, load_toy_study: LoadStudy,
                                                         option: str, args: list[str]) -> None:
    run_toy(f"hydra/sweeper/{option}", *args, f"hydra.sweep.dir=multirun/{option.replace('=', '-')}")
    trials = load_toy_study().trials
    assert len(trials) == 2 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    if option.startswith("pruner"):
        assert all(t.intermediate_values for t in trials), "the pruner was consulted on reported values"


def test_a_study_is_named_after_its_search_space_and_settings(run_toy: RunToy, tmp_path: Path) -> None:
    derived = ["hydra.sweeper.study_name=null", "hydra.sweeper.study_prefix=toy",
               "hydra.sweeper.identity_ignore=[sleep]"]
    first = run_toy(*derived, "x=0,1", "hydra.sweep.dir=multirun/a")
    name = re.search(r"new study (toy-[0-9a-f]{8}): 0/2 finished", first.stdout + first.stderr).group(1)
    again = run_toy(*derived, "x=0,1", "sleep=0", "hydra.sweep.dir=multirun/b")  # an ignored key: same study
    assert f"resuming study {name}: 2/2 finished" in again.stdout + again.stderr
    other = run_toy(*derived, "x=0,1", "y=1", "hydra.sweep.dir=multirun/c")  # a fixed override that matters
    wider = run_toy(*derived, "x=0,1,2", "hydra.sweep.dir=multirun/d")  # another space
    names = {re.search(r"new study (toy-[0-9a-f]{8})", p.stdout + p.stderr).group(1) for p in (other, wider)}
    assert len(names | {name}) == 3
    assert {p.stem for p in (tmp_path / "optuna").glob("*.db")} == names | {name}


def test_joining_a_study_by_name_with_another_space_is_refused_before_any_trial(
    run_toy: RunToy, load_toy_study: LoadStudy
) -> None:
    run_toy("x=0,1", "hydra.sweep.dir=multirun/a")  # study_name: toy (the toy app's config)
    refused = run_toy("x=0,1,2", "hydra.sweep.dir=multirun/b", "hydra.sweeper.n_trials=3", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    said = ("error: hydra.sweeper.study_name: study 'toy' was created with another search space (param x: stored "
            "CategoricalDistribution(choices=(0, 1)), now CategoricalDistribution(choices=(0, 1, 2)))")
    assert said in refused.stderr
    assert len(load_toy_study().trials) == 2
    run_toy("x=0,1", "y=1", "hydra.sweep.dir=multirun/c", "hydra.sweeper.n_trials=3")  # joined on purpose
    assert len(load_toy_study().trials) == 3


def _owned_running_trial(tmp_path: Path) -> bool:
    """Whether the toy study has a RUNNING trial with its worker recorded, read without creating anything
    (opening the study through Optuna would create its tables and race the worker doing the same)."""
    db = tmp_path / "optuna" / "toy.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = ?", (WORKER_ATTR,)).fetchone()
    except sqlite3.Error:  # the worker has not created the tables yet
        return False
    return n > 0


def test_a_worker_killed_with_9_mid_trial_never_blocks_the_study(
    run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path
) -> None:
    """kill -9 leaves its trial RUNNING; a rerun on this host sees the owner's pid gone and re-runs the slot at
    once, without waiting out the heartbeat grace period (120 s here)."""
    from tests.sweeping.conftest import toy_command, toy_env

    proc = subprocess.Popen(toy_command("x=0,1", "sleep=60", "hydra.sweep.dir=multirun/k"), cwd=tmp_path,
                            env=toy_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        while time.monotonic() < deadline and proc.poll() is None and not _owned_running_trial(tmp_path):
            time.sleep(0.2)
        proc.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [t.state for t in load_toy_study().trials] == [TrialState.RUNNING]
    rerun = run_toy("x=0,1", "sleep=0", "hydra.sweep.dir=multirun/r")
    assert "left RUNNING by a sweep process that no longer exists" in rerun.stdout + rerun.stderr
    # no trial had finished, but the study had begun: the console says it resumes it
    assert re.search(r"resuming study \S+: 0/2 finished", rerun.stdout + rerun.stderr), rerun.stdout + rerun.stderr
    counts = count_trials(load_toy_study())
    assert (counts.complete, counts.failed, counts.stale, counts.running) == (2, 0, 1, 0)


def test_a_worker_that_crashes_fails_its_own_trials_on_the_way_out(
    run_toy: RunToy, load_toy_study: LoadStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from narm_lightning.sweeping import sweeper as sweeper_module

    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr(sweeper_module.WORKER_ATTR, sweeper_module.this_worker())
    other = study.ask()
    other.set_user_attr(sweeper_module.WORKER_ATTR, "elsewhere:1")
    sweeper_module.fail_own_running_trials(study, study._storage, "the sweep process stopped (ValueError: x)")
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.FAIL, 1: TrialState.RUNNING}
    assert study.trials[0].user_attrs["error"].startswith("the sweep process stopped")


def test_the_console_tells_the_story_and_a_finished_study_writes_nothing(run_toy: RunToy, tmp_path: Path) -> None:
    args = ["x=0,1,2", "size=choice(small,large)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=null"]
    out = run_toy(*args, "hydra.sweep.dir=multirun/a")
    text = out.stdout + out.stderr
    assert "new study toy: 0/6 finished. Space: grid of 6 points: x 3 x size 2; n_trials 6 (grid)" in text
    lines = re.findall(r"trial (\d)/6 x=\d size=\w+: value [\d.]+, \d+ s(, ETA \d+ s)?", text)
    assert [n for n, _ in lines] == ["1", "2", "3", "4", "5", "6"] and all(eta for _, eta in lines[:-1])
    assert "Best trial: #" in text
    again = run_toy(*args, "hydra.sweep.dir=multirun/b")
    assert "Study toy is complete (6/6 finished)" in again.stdout + again.stderr
    assert not (tmp_path / "multirun" / "b").exists(), "a finished study's rerun leaves no sweep folder"


def test_a_running_trial_whose_owner_was_never_recorded_is_orphaned_after_the_grace_period() -> None:
    study = optuna.create_study()
    orphan = study.ask()  # a worker killed between ask and recording itself
    live = study.ask()
    live.set_user_attr(WORKER_ATTR, "elsewhere:1")  # another host: only heartbeats can tell
    assert fail_dead_workers_trials(study, study._storage, grace_seconds=3600) == []
    assert fail_dead_workers_trials(study, study._storage, grace_seconds=0) == [orphan.number]
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING] and states[2] == TrialState.WAITING  # re-queued


def test_plots_open_offline_name_the_objective_and_skip_meaningless_importances(
    run_toy: RunToy, tmp_path: Path
) -> None:
    out = run_toy("x=0,1", "hydra/sweeper/sampler=grid", "hydra.sweeper.plots=true",
                  "hydra.sweeper.objective_name=toy loss", "hydra.sweep.dir=multirun/p")
    folder = sweep_dir(tmp_path, "p")
    assert (folder / "plotly.min.js").stat().st_size > 1_000_000
    history = (folder / "optimization_history.html").read_text()
    assert 'src="plotly.min.js"' in history and "cdn.plot.ly" not in history
    assert "toy loss" in history and "Objective Value" not in history
    assert not (folder / "param_importances.html").exists()
    assert "Skipped param_importances.html: importances need at least 5 complete trials and 2 parameters that " \
           "vary (have 2 and 1)" in out.stdout + out.stderr
    rows = read_csv(folder / "trials.csv")
    assert all(Path(r["folder"]).is_dir() and Path(r["folder"]).parent == folder for r in rows)


def test_seeds_per_trial_make_the_objective_a_mean_and_a_study_of_its_own(
    run_toy: RunToy, tmp_path: Path
) -> None:
    def noise(seed: int) -> float:
        return 0.5 * ((seed * 7919) % 10) / 10

    common = ("hydra.sweeper.study_name=null", "noise=0.5", "x=1,3", "hydra/sweeper/sampler=grid")
    run_toy("hydra.sweep.dir=multirun/seeds", "hydra.sweeper.seeds_per_trial=3", *common)
    out = sweep_dir(tmp_path, "seeds")
    (db,) = (tmp_path / "optuna").glob("*.db")
    study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
    for trial in study.trials:  # the objective at x=1 and x=3 is 1 + noise(seed): the mean over 2020..2022
        values = [1.0 + noise(s) for s in (2020, 2021, 2022)]
        assert trial.value == pytest.approx(sum(values) / 3)
        assert trial.user_attrs["seed_values"] == pytest.approx(dict(zip(["2020", "2021", "2022"], values)))
        assert trial.user_attrs["value_std"] == pytest.approx(statistics.stdev(values))
    assert len([p for p in out.iterdir() if p.name.isdigit()]) == 6, "3 seeds x 2 trials, one folder each"
    run_toy("hydra.sweep.dir=multirun/one", *common)  # one seed a trial: another objective, another study
    assert len(list((tmp_path / "optuna").glob("*.db"))) == 2


def test_a_failing_first_seed_fails_the_trial_without_training_the_others(run_toy: RunToy, tmp_path: Path) -> None:
    run_toy("hydra.sweep.dir=multirun/f", "hydra.sweeper.seeds_per_trial=3", "x=1,3", "fail_x=1",
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.max_failure_rate=1.0")
    assert len([p for p in sweep_dir(tmp_path, "f").iterdir() if p.name.isdigit()]) == 1 + 3
    states = {r["x"]: r["state"] for r in read_csv(sweep_dir(tmp_path, "f") / "trials.csv")}
    assert states == {"1": "FAIL", "3": "COMPLETE"}


def test_confirm_step_retrains_top_and_default_over_seeds_and_resumes(
    run_toy: RunToy, load_toy_study: LoadStudy, tmp_path: Path
) -> None:
    args = ("hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4", "noise=0.5", "hydra.sweeper.confirm_top=2")
    proc = run_toy("hydra.sweep.dir=multirun/c1", *args, "hydra.sweeper.confirm_seeds=2")
    out = sweep_dir(tmp_path, "c1")
    rows = read_csv(out / "confirm.csv")
    # x=2 is the best trial (value = 0 + noise), x=1 or 3 the second; the default config is x=0 (value 4 + noise)
    assert [r["config"] for r in rows if r["metric"] == "loss"][0] == "default"
    by = {(r["config"], r["metric"]): r for r in rows}
    best = next(r for r in rows if r["metric"] == "loss" and json.loads(r["params"]) == {"x": 2})
    assert float(by[("default", "loss")]["mean"]) == pytest.approx(4 + (0.5 * 0.0 + 0.5 * 0.9) / 2)
    assert float(best["diff_vs_default"]) == pytest.approx(-4.0) and int(best["n_paired"]) == 2
    assert best["p_value_paired"] == "", "a constant difference has no variance: no t-test"
    assert "Confirm step" in proc.stderr + proc.stdout and (out / "confirm.md").read_text().count("| loss |") == 3
    jobs_before = len([p for p in out.iterdir() if p.name.isdigit()])
    assert jobs_before == 4 + 3 * 2

    # a third seed: only the 3 missing runs train (the 6 done ones are stored in the study)
    run_toy("hydra.sweep.dir=multirun/c2", *args, "hydra.sweeper.confirm_seeds=3")
    assert len([p for p in sweep_dir(tmp_path, "c2").iterdir() if p.name.isdigit()]) == 3
    rows = read_csv(sweep_dir(tmp_path, "c2") / "confirm.csv")
    assert {int(r["n"]) for r in rows} == {3}
    # the same command again: nothing to run, no new folder; the table is printed
    again = run_toy("hydra.sweep.dir=multirun/c3", *args, "hydra.sweeper.confirm_seeds=3")
    assert not sweep_dir(tmp_path, "c3").exists() and "Confirm step" in again.stderr + again.stdout


def _garbage(db: Path) -> None:
    db.write_bytes(bytes(range(256)) * 16)


def _truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])


def _damaged_page(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = 4096  # SQLite's default page size: overwrite the b-tree header of the second page
    data[page:page + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _truncated, _damaged_page])
def test_a_damaged_study_database_is_one_paragraph(run_toy: RunToy, tmp_path: Path, damage) -> None:
    """The red-team's damaged SQLite study (garbage, cut short, a bad page): exit 2 naming the file (SQLite's
    quick_check), no traceback, the file as it was."""
    run_toy()
    db = tmp_path / "optuna" / "toy.db"
    damage(db)
    before = db.read_bytes()
    proc = run_toy(check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"hydra.sweeper.storage: {db} is not a whole SQLite database (" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert db.read_bytes() == before


def test_a_task_may_report_numbers_beside_its_objective() -> None:
    """``{"objective": v, "report": {...}}``: v is told to the study; the report's numbers (not bools, not text)
    are kept, and over several seeds each name's mean over the seeds that reported it."""
    from narm_lightning.sweeping.trials import mean_report, objective_and_report

    assert objective_and_report(0.5) == (0.5, {})
    assert objective_and_report({"objective": 0.5, "report": {"test mrr@10": 0.25, "flag": True, "name": "x",
                                                               "n": 3}}) == (0.5, {"test mrr@10": 0.25, "n": 3.0})
    assert objective_and_report({"value": 1}) == ({"value": 1}, {})  # no objective: the task's own mapping
    assert mean_report([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}
