"""``bench/study/snapshot.py``: a persistent study to a text file and back, trial for trial."""

from __future__ import annotations

import optuna
import pytest

from tests.helpers import bench_script


def _study(storage: str) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("pruner", {"n_warmup_steps": 10})
    for i in range(3):
        trial = study.ask()
        x = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.report(x * i, 0)
        trial.report(x * i + 1, 1)
        if i == 1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, x)
    study.enqueue_trial({"lr": 0.001})  # a stopped trial queued again: WAITING
    return study


def _fields(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.value, t.intermediate_values, t.user_attrs, t.system_attrs,
             t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False)]


def test_export_then_import_gives_the_same_study_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    snapshot = bench_script("study.snapshot")
    source = f"sqlite:///{tmp_path / 'a.db'}"
    original = _study(source)
    journal = tmp_path / "summary" / "s.journal"
    assert snapshot.main(["export", "--study", "s", "--storage", source, "--file", str(journal)]) == 0
    assert journal.read_text().startswith("{")  # text: one JSON operation a line
    assert not list(journal.parent.glob(".snapshot-*"))  # nothing half-written left beside it
    target = f"sqlite:///{tmp_path / 'b.db'}"
    assert snapshot.main(["import", "--study", "s", "--storage", target, "--file", str(journal)]) == 0
    restored = optuna.load_study(study_name="s", storage=target)
    assert _fields(restored) == _fields(original)
    assert restored.user_attrs == original.user_attrs
    assert [t.state for t in restored.trials][-1] == optuna.trial.TrialState.WAITING
    assert snapshot.main(["import", "--study", "s", "--storage", target, "--file", str(journal)]) == 2
    assert "already holds study 's'" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["export", "import"])
def test_a_missing_study_or_snapshot_is_refused(tmp_path, capsys, action) -> None:
    snapshot = bench_script("study.snapshot")
    args = [action, "--study", "nope", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--file",
            str(tmp_path / "none.journal")]
    assert snapshot.main(args) == 2
    assert ("no study 'nope'" if action == "export" else "no snapshot file") in capsys.readouterr().err
    if action == "import":
        assert not (tmp_path / "x.db").exists()  # refused before the storage was created
