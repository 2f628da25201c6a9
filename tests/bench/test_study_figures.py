"""``bench/study/figures.py``: the README's two study pictures from a study's storage, and its refusals."""

from __future__ import annotations

import json

import optuna
import pytest

from tests.helpers import bench_script

pytest.importorskip("matplotlib")  # the `figures` extra (in `dev`)
PNG = b"\x89PNG\r\n\x1a\n"


def _study(path, confirm: bool) -> str:
    storage = f"sqlite:///{path}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # as the sweeper does
        study.set_metric_names(["valid mrr@10"])
    for i, lr in enumerate((0.01, 0.001, 0.0001, 0.005)):
        trial = study.ask({"lr": optuna.distributions.CategoricalDistribution([0.01, 0.001, 0.0001, 0.005])})
        for step in range(3):
            trial.report(0.01 * (i + 1) + 0.001 * step, step)
        if lr == 0.0001:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.01 * (i + 1) + 0.002)
    if confirm:  # the sweeper's confirm attrs: default and the best trial (3), three seeds each, one job failed
        for seed in (1, 2, 3):
            study.set_user_attr(f"confirm:default:{seed}",
                                {"params": {}, "metrics": {"mrr@10": 0.040 + 0.001 * seed, "ndcg@10": 0.06}})
            study.set_user_attr(f"confirm:trial 3:{seed}",
                                {"params": {"lr": 0.005}, "metrics": {"mrr@10": 0.050 + 0.002 * seed, "ndcg@10": 0.07}})
        study.set_user_attr("confirm:trial 0:1", {"params": {"lr": 0.01}, "error": "killed"})
    return storage


def test_history_and_confirm_pictures_are_written_as_png(tmp_path, capsys) -> None:
    module = bench_script("study.figures")
    storage = _study(tmp_path / "s.db", confirm=True)
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"label": "RecBole", "metrics": {"mrr@10": 0.0409}}))
    out = tmp_path / "figs" / "s"
    assert module.main(["--study", "s", "--storage", storage, "--out", str(out), "--reference", str(reference),
                        "--metrics", "mrr@10", "ndcg@10"]) == 0
    for name in ("history", "confirm"):
        data = (tmp_path / "figs" / f"s-{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert "wrote" in capsys.readouterr().out
    complete, pruned, best = module.history_points(optuna.load_study(study_name="s", storage=storage))
    assert [n for n, _ in complete] == [0, 1, 3] and [n for n, _ in pruned] == [2]
    assert pruned[0][1] == pytest.approx(0.032)  # its last report
    assert [v for _, v in best] == pytest.approx([0.012, 0.022, 0.042])  # best so far, maximizing


def test_without_confirm_results_only_the_history_is_drawn(tmp_path, capsys) -> None:
    module = bench_script("study.figures")
    storage = _study(tmp_path / "s.db", confirm=False)
    assert module.main(["--study", "s", "--storage", storage, "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s-history.png").is_file() and not (tmp_path / "s-confirm.png").exists()
    assert "no confirm results yet" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["no database", "no study", "bad reference"])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, case) -> None:
    module = bench_script("study.figures")
    storage = _study(tmp_path / "s.db", confirm=False)
    reference = tmp_path / "ref.json"
    reference.write_text('{"metrics": {"mrr@10": "high"}}')
    args = {"no database": ["--study", "s", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"],
            "no study": ["--study", "other", "--storage", storage],
            "bad reference": ["--study", "s", "--storage", storage, "--reference", str(reference)]}[case]
    assert module.main([*args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("study_figures: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "missing.db").exists()  # nothing created
    assert not list(tmp_path.glob("x-*.png"))
