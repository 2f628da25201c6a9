"""``bench/study/readme.py``: the README's study section comes from the study (status, every grid point, the
confirm table with the goal's verdict), replaces only what lies between its markers, and refuses bad input."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import optuna
import pytest

from narm_lightning.sweeping.confirm import attr_key
from tests.bench.test_study_status import SPACE, _study
from tests.helpers import REPO, bench_command, bench_script

REFERENCE = {"label": "RecBole 1.2.1 default (3 seeds)", "source": "issue 20",
             "metrics": {"mrr@10": 0.0409, "ndcg@10": 0.0606, "recall@10": 0.1266}}
BENCH_ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # python -m bench.study.readme from another folder
NOW = dt.datetime(2026, 12, 6, 20, 0, tzinfo=dt.timezone.utc)


@pytest.fixture()
def readme_module():
    return bench_script("study.readme")


def _confirm(study, label: str, params: dict, mrr: list[float]) -> None:
    for seed, value in zip((2020, 2021, 2022), mrr):
        study.set_user_attr(attr_key(label, seed), {"params": params, "metrics": {
            "mrr@10": value, "ndcg@10": value * 1.5, "recall@10": value * 3}})


def test_an_unfinished_study_says_so_and_lists_every_point(tmp_path, readme_module) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW)
    assert "**Status, 2026-12-06 20:00 UTC: in progress** (3 of 4 grid points done, confirm step not started" in text
    assert "| lr | layers | state | value | epochs | trial |" in text  # no objective name set: "value"
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # Optuna's note on the API the sweeper uses too
        study.set_metric_names(["valid MRR@10"])
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW)
    assert "| lr | layers | state | valid MRR@10 | epochs | trial |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert rows == ["| 0.001 | 1 | complete | 0.0500 | 1 | 3 |", "| 0.01 | 1 | complete | 0.0400 | 2 | 0 |",
                    "| 0.01 | 2 | pruned | 0.0300 | 2 | 1 |", "| 0.001 | 2 | not run yet |  |  |  |"]
    assert "mrr@10 0.0409, ndcg@10 0.0606, recall@10 0.1266" in text and "Goal" not in text
    assert ("What matters so far, each value's best / median point (points done; a pruned point at the value where "
            "it stopped, which it might have passed): lr 0.01 0.0400 / 0.0350 (2), 0.001 0.0500 / 0.0500 (1); "
            "layers 1 0.0500 / 0.0450 (2), 2 0.0300 / 0.0300 (1). No one parameter decides: its values' medians span "
            "lr 0.0150, layers 0.0150.") in text  # a tie names no winner
    assert "![optimization history](figs/s-history.png)" in text


def test_the_confirm_steps_size_is_said_from_the_grids_end_and_one_seed_each_is_not_complete(
        tmp_path, readme_module) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    study.enqueue_trial({"lr": 0.001, "layers": 2})  # the last grid point: the grid is done, no confirm run yet
    last = study.ask(SPACE)
    last.report(0.02, 0)
    study.tell(last, 0.02)
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW)
    # medians: layers 1 0.045 vs 2 0.025 (0.0200), lr 0.01 0.035 vs 0.001 0.035 (0.0000)
    assert "layers decides: its values' medians span 0.0200 (lr 0.0000)." in text
    assert "(4 of 4 grid points done, confirm step 0 of 6 runs done;" in text  # default + top 1, 3 seeds each
    for label, params in (("default", {}), ("trial 3", {"lr": 0.001, "layers": 1})):
        study.set_user_attr(attr_key(label, 2020), {"params": params, "metrics": {"mrr@10": 0.05}})
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW)  # every config once: 2 of 6, no verdict
    assert "in progress** (4 of 4 grid points done, confirm step 2 of 6 runs done;" in text and "Goal" not in text
    assert "| trial 3 | lr=0.001, layers=1 | mrr@10 | 1 | 0.0500 | - | +0.0000 (+0.0%) |  |" in text  # one seed
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW, n_seeds=1)  # a sweep with confirm_seeds=1
    assert "**Status, 2026-12-06 20:00 UTC: complete.**" in text and "Goal (test MRR@10" in text


@pytest.mark.parametrize(("best", "verdict"), [([0.050, 0.052, 0.051], "**met**"), ([0.047, 0.049, 0.048],
                                                                                     "**not met**")])
def test_the_confirm_table_ends_with_the_goals_verdict(tmp_path, readme_module, best, verdict) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    _confirm(study, "default", {}, [0.040, 0.041, 0.043])
    _confirm(study, "trial 3", {"lr": 0.001, "layers": 1}, best)
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW)
    assert "The other confirmed configs" not in text  # top 1: the goal's config is the only one
    assert "| trial 3 | lr=0.001, layers=1 | mrr@10 | 3 |" in text and "RecBole 1.2.1 default (3 seeds): mrr@10" in text
    goal = next(line for line in text.splitlines() if line.startswith("Goal"))
    assert goal.startswith("Goal (test MRR@10 ≥ 0.0491") and goal.endswith(f"{verdict}.")
    assert "paired p = " in goal
    assert "the seed std of a config is 0.0010 to 0.0015" in text  # default 0.0015, best 0.0010 either way


def test_only_the_marked_section_is_replaced_and_a_readme_without_markers_is_refused(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    _study(storage)
    reference = tmp_path / "ref.json"
    reference.write_text('{"label": "RecBole", "metrics": {"mrr@10": 0.04}}')
    readme = tmp_path / "README.md"
    module = bench_script("study.readme")
    readme.write_text(f"# top\n\n{module.MARK_START}\nold text\n{module.MARK_END}\n\n## after\n")
    args = [*bench_command("study.readme"), "--study", "s", "--storage", storage,
            "--readme", str(readme), "--reference", str(reference)]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=BENCH_ENV)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith(f"# top\n\n{module.MARK_START}\n## What tuning buys") and text.endswith(
        f"{module.MARK_END}\n\n## after\n")
    assert "old text" not in text
    readme.write_text("# no markers\n")
    refused = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=BENCH_ENV)
    assert refused.returncode == 2 and "the README needs the lines" in refused.stderr
    assert "Traceback" not in refused.stderr and readme.read_text() == "# no markers\n"
    missing = subprocess.run([*args[:6], f"sqlite:///{tmp_path / 'nope.db'}", *args[7:]], capture_output=True,
                             text=True, cwd=tmp_path, env=BENCH_ENV)
    assert missing.returncode == 2 and "no such database file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()


def test_the_readme_carries_the_markers() -> None:
    module = bench_script("study.readme")
    text = (REPO / "README.md").read_text()
    assert text.count(module.MARK_START) == 1 and text.count(module.MARK_END) == 1


def test_the_goal_judges_the_grids_best_on_valid_and_shows_the_others_without_choosing_by_test(
        tmp_path, readme_module) -> None:
    study = _study(f"sqlite:///{tmp_path / 's.db'}")  # trial 3 best on valid, trial 0 second
    _confirm(study, "default", {}, [0.040, 0.041, 0.043])
    _confirm(study, "trial 3", {"lr": 0.001, "layers": 1}, [0.047, 0.049, 0.048])
    _confirm(study, "trial 0", {"lr": 0.01, "layers": 1}, [0.050, 0.052, 0.051])
    text = readme_module.section(study, REFERENCE, "figs/s", 2, NOW)
    goal = next(line for line in text.splitlines() if line.startswith("Goal"))
    assert "trial 3 (the grid's best on valid) reaches 0.0480 ± 0.0010 (+17.4% against RecBole's)" in goal
    assert goal.endswith("**not met**.")
    others = next(line for line in text.splitlines() if line.startswith("The other confirmed configs"))
    assert others.startswith("The other confirmed configs (shown, not chosen by their test figures): trial 0 0.0510 ± "
                             "0.0010, p = ") and others.endswith("(would meet it).")


CONSOLE = """[2026-12-06 20:00:00,100][HYDRA] resuming study s: 3/4 finished. Space: grid of 4 points
[2026-12-06 20:30:00,000][HYDRA] Study has 4 finished trials (target 4): done.
[2026-12-06 20:30:00,200][HYDRA] Confirm step: 2 configs (default, trial 3) x 3 seeds; 6 runs left.
[2026-12-06 21:00:00,000][HYDRA] confirm 1/6 default seed 2020: mrr@10 0.04
Traceback (most recent call last):
[2026-12-06 21:15:00,000][narm_lightning.sweeping.sweeper][WARNING] - Confirm default seed 2021 stopped
[2026-12-06 23:00:00,000][HYDRA] resuming study s: 4/4 finished. Space: grid of 4 points
[2026-12-06 23:00:01,000][HYDRA] Confirm step: 2 configs (default, trial 3) x 3 seeds; 5 runs left.
[2026-12-06 23:30:01,000][HYDRA] confirm 1/5 default seed 2021: mrr@10 0.04
"""


def test_the_confirm_steps_time_is_read_per_sitting_from_the_console_log(tmp_path, readme_module) -> None:
    from bench.study import status as study_status

    hours, sittings = study_status.confirm_hours(CONSOLE)  # 20:30-21:15 and 23:00:01-23:30:01, not the gap
    assert (round(hours * 60, 2), sittings) == (75.0, 2)
    assert study_status.confirm_hours(CONSOLE.split("[2026-12-06 20:30:00,200]")[0]) == (0.0, 0)  # grid only
    study = _study(f"sqlite:///{tmp_path / 's.db'}")
    _confirm(study, "default", {}, [0.040])
    text = readme_module.section(study, REFERENCE, "figs/s", 1, NOW, console=CONSOLE)
    grid_hours = study_status.trial_hours(study.get_trials())
    assert (f"; the confirm step so far 1.2 h in 2 sittings (from the study's console log); the whole study "
            f"{grid_hours + 1.25:.1f} h of training.") in text
    assert "the confirm step's time is in its console log, not given here" in readme_module.section(
        study, REFERENCE, "figs/s", 1, NOW)
    readme = tmp_path / "README.md"
    readme.write_text(f"{readme_module.MARK_START}\n{readme_module.MARK_END}\n")
    assert readme_module.main(["--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "s", "--readme", str(readme),
                               "--console", str(tmp_path / "missing.log")]) == 2
    assert readme.read_text() == f"{readme_module.MARK_START}\n{readme_module.MARK_END}\n"
