"""``bench/study/status.py``: the grid one line per point (best first, pruned or not, not run yet), stopped
and re-run trials standing for their point once."""

from __future__ import annotations

import subprocess

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from narm_lightning.sweeping.study import requeue
from tests.helpers import REPO, bench_command, bench_script

SPACE = {"lr": CategoricalDistribution([0.01, 0.001]), "layers": CategoricalDistribution([1, 2])}


def _study(storage: str) -> optuna.Study:
    """4 grid points: (0.01, 1) complete 0.04; (0.01, 2) pruned at 0.03; (0.001, 1) stopped, re-run, complete
    0.05; (0.001, 2) not run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")

    def run(params: dict, state: TrialState, values: list[float]) -> optuna.trial.Trial:
        study.enqueue_trial(params)
        trial = study.ask(SPACE)
        for step, value in enumerate(values):
            trial.report(value, step)
        if state == TrialState.COMPLETE:
            study.tell(trial, values[-1])
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
        return trial

    run({"lr": 0.01, "layers": 1}, TrialState.COMPLETE, [0.02, 0.04])
    run({"lr": 0.01, "layers": 2}, TrialState.PRUNED, [0.01, 0.03])
    stopped = run({"lr": 0.001, "layers": 1}, TrialState.RUNNING, [0.01])
    storage_obj = study._storage
    storage_obj.set_trial_state_values(stopped._trial_id, state=TrialState.FAIL)
    requeue(study, storage_obj, stopped._trial_id)  # as a SIGTERM-ed sweep leaves it: queued again, same params
    retry = study.ask(SPACE)
    assert retry.params == {"lr": 0.001, "layers": 1}
    retry.report(0.05, 0)
    study.tell(retry, 0.05)
    return study


def test_the_grid_table_has_one_line_per_point_best_first(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    _study(storage)
    out = subprocess.run([*bench_command("study.status"), "--study", "s", "--storage",
                          storage], capture_output=True, text=True, check=True, cwd=REPO).stdout
    grid = out[out.index("Grid:"):].splitlines()
    assert grid[0] == "Grid: 3 of 4 points done (2 complete, 1 pruned), best first:"
    rows = [line for line in grid if line.startswith("| 0.")]
    assert rows == ["| 0.001 | 1 | complete | 0.0500 | 1 | 3 |",
                    "| 0.01 | 1 | complete | 0.0400 | 2 | 0 |",
                    "| 0.01 | 2 | pruned | 0.0300 | 2 | 1 |",
                    "| 0.001 | 2 | not run yet |  |  |  |"]
    assert "FAIL (stopped; run again)" in out  # the trials table still shows the stopped one


def test_a_space_that_is_not_a_categorical_grid_has_no_grid_table(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'f.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    module = bench_script("study.status")
    trials = study.get_trials()
    assert module.grid_points(trials, set()) == []


def test_a_running_point_shows_its_last_value(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(study_name="r", storage=storage, direction="maximize")
    trial = study.ask(SPACE)
    trial.report(0.0123, 0)
    trial.report(0.0175, 1)  # still RUNNING
    out = subprocess.run([*bench_command("study.status"), "--study", "r", "--storage",
                          storage], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert f"| running | 0.0175 (last) | 2 | {trial.number} |" in out
    assert "Grid: 0 of 4 points done" in out
