"""The everyday path as users type it (issue 33): a sweep sweeps what its command line names, numeric group options
work unquoted, a typo in a swept key or a ``+key`` nothing reads gets "did you mean", each through the real
programs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, tiny_overrides


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _space_line(out: str) -> str:
    return next(line for line in out.splitlines() if "Space: " in line)


def _trial_lines(out: str) -> list[str]:
    return re.findall(r"Trial \d+: (.*)", out)


def test_a_sweep_sweeps_only_what_its_command_line_names(tiny_root, tmp_path) -> None:
    proc = _run("sweep.py", "-m", *tiny_overrides(tiny_root, "epochs=1"), "learning_rate=0.01,0.001", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "grid of 2 points: learning_rate 2;" in _space_line(out)
    assert sorted(_trial_lines(out)) == ["learning_rate=0.001", "learning_rate=0.01"]
    assert "2/2 finished" not in _space_line(out) and "Study has 2 finished trials (target 2)" in out
    # each parameter set's test result, as RecBole's run_hyper.py prints it: in its line and in trials.csv
    import csv
    import json

    (folder,) = (tmp_path / "multirun").iterdir()
    with (folder / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        results = json.loads((Path(row["folder"]) / "results.json").read_text())
        assert float(row["test mrr@10"]) == pytest.approx(results["test"]["mrr@10"])
        assert float(row["value"]) == pytest.approx(results["best_valid_score"])
        line = next(x for x in out.splitlines() if re.search(rf"trial \d/2 learning_rate={row['learning_rate']}:", x))
        assert f"test mrr@10 {results['test']['mrr@10']:.4g}" in line and "test recall@10 " in line


def test_no_swept_key_or_the_named_preset_runs_recbole_hyper_test_as_one_study(tiny_root, tmp_path) -> None:
    """``sweep.py -m`` alone and ``search=hyper_test`` give RecBole's 30-point grid, and they are one study (the
    preset's name is no trial setting); ``search=hyper_test lr=...`` keeps the preset with that key replaced."""
    args = [*tiny_overrides(tiny_root, "epochs=1"), "hydra.sweep.dir=multirun/s"]
    first = _run("sweep.py", "-m", *args, "search=hyper_test", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    line = _space_line(first.stdout + first.stderr)
    assert "new study" in line
    assert "grid of 30 points: learning_rate 5 x hidden_size 1 x n_layers 2 x dropout_probs 3" in line
    study = re.search(r"new study (\S+):", line)[1]
    assert re.fullmatch(r"tiny-[0-9a-f]{8}", study), study  # named after the dataset (study_prefix_key)
    again = _run("sweep.py", "-m", *args, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming study {study}: 1/2 finished" in _space_line(again.stdout + again.stderr)
    merged = _run("sweep.py", "-m", *args, "search=hyper_test", "learning_rate=0.01,0.001",
                  "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "grid of 12 points: learning_rate 2 x hidden_size 1 x n_layers 2 x dropout_probs 3" in _space_line(
        merged.stdout + merged.stderr)


def test_numeric_group_options_work_unquoted(tiny_root, tmp_path) -> None:
    args = [a for a in tiny_overrides(tiny_root, "epochs=1") if not a.startswith("model.hidden_size")]
    proc = _run("train.py", *args, "hidden_size=64", "n_layers=2", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "run" / ".hydra" / "config.yaml").read_text())
    assert (saved["model"]["hidden_size"], saved["model"]["n_layers"]) == (64, 2)
    sweep = _run("sweep.py", "-m", *args, "n_layers=1,2", "hidden_size=64", "hydra.sweep.dir=multirun/n", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert sorted(_trial_lines(sweep.stdout + sweep.stderr)) == ["n_layers=1", "n_layers=2"]
    runs = sorted((tmp_path / "multirun" / "n").glob("*/.hydra/config.yaml"))
    assert sorted(yaml.safe_load(r.read_text())["model"]["n_layers"] for r in runs) == [1, 2]
    assert {yaml.safe_load(r.read_text())["model"]["hidden_size"] for r in runs} == {64}


def test_an_option_that_does_not_exist_is_one_paragraph(tiny_root, tmp_path) -> None:
    for args in (["hidden_size=257"], ["n_layers=1.5"], ["n_layers=[1,2"]):
        proc = _run("train.py", *tiny_overrides(tiny_root, "epochs=1"), *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Available options in 'hidden_size': 100 128 256 512 64" in _run(
        "train.py", "hidden_size=257", cwd=tmp_path).stderr


def test_a_typo_in_a_swept_key_or_an_unread_plus_key_gets_did_you_mean(tiny_root, tmp_path) -> None:
    sweep = _run("sweep.py", "-m", *tiny_overrides(tiny_root, "epochs=1"), "learnin_rate=0.01,0.001", cwd=tmp_path)
    assert sweep.returncode == 2, sweep.stderr[-2000:]
    assert "learnin_rate is not a key of this config (did you mean learning_rate?)" in sweep.stderr
    assert "+learnin_rate" not in sweep.stderr  # Hydra's advice would add a key nothing reads
    train = _run("train.py", *tiny_overrides(tiny_root, "epochs=1"), "+learnin_rate=0.01", "hydra.run.dir=r",
                 cwd=tmp_path)
    assert train.returncode == 2, train.stderr[-2000:]
    assert "learnin_rate is set but nothing reads it (did you mean learning_rate?" in train.stderr
    assert not (tmp_path / "r").exists(), "nothing is left behind"
    nested = _run("train.py", *tiny_overrides(tiny_root, "epochs=1"), "+model.hiden_size=8", "+data.colour=red",
                  cwd=tmp_path)
    assert nested.returncode == 2
    assert "model.hiden_size is set but nothing reads it (did you mean model.hidden_size?" in nested.stderr
    assert "data.colour is set but nothing reads it" in nested.stderr


def test_one_switch_runs_recbole_exact_path() -> None:
    """``experiment=recbole_exact``: the two speed-only defaults (bucketed batches, bf16 autocast) off; everything
    else as the defaults."""
    from tests.helpers import compose_train

    default, exact = compose_train([]), compose_train(["experiment=recbole_exact"])
    assert (default.data.bucket_batches, default.trainer.precision, default.model.gru_impl) == (8, "auto", "auto")
    assert (exact.data.bucket_batches, exact.trainer.precision, exact.model.gru_impl) == (0, "32-true", "auto")
    changed = {k for k in ("learning_rate", "train_batch_size", "epochs", "stopping_step", "seed")
               if default[k] != exact[k]}
    assert not changed and default.model.dropout_probs == exact.model.dropout_probs


def test_one_study_lives_in_one_folder_named_by_it(tiny_root, tmp_path) -> None:
    """Two sittings of one sweep (no hydra.sweep.dir given): both in ``multirun/<study>/``, trial folders numbered on,
    trials.csv and curves.csv covering every trial, plotly.js once; the end says the folder's size."""
    import csv

    args = ["-m", *tiny_overrides(tiny_root, "epochs=2"), "learning_rate=0.01,0.005,0.001"]
    first = _run("sweep.py", *args, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    study = re.search(r"new study (\S+):", first.stdout + first.stderr)[1]
    second = _run("sweep.py", *args, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == [study]
    folder = tmp_path / "multirun" / study
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1"]
    with (folder / "trials.csv").open() as fh:
        assert [row["number"] for row in csv.DictReader(fh)] == ["0", "1"]
    with (folder / "curves.csv").open() as fh:
        assert {row["number"] for row in csv.DictReader(fh)} == {"0", "1"}
    assert len(list(tmp_path.rglob("plotly*.js"))) == 1
    assert re.search(rf"Results in multirun/{study} \(\d+(\.\d)? [KM]B on disk\)", second.stdout + second.stderr)


def test_sweep_help_lists_samplers_pruners_and_presets(tmp_path) -> None:
    out = _run("sweep.py", "--help", cwd=tmp_path).stdout
    for name in ("sampler=tpe", "sampler=random", "sampler=grid", "sampler=cmaes", "pruner=median",
                 "pruner=hyperband", "pruner=nop", "search=hyper_test"):
        assert f"hydra/sweeper/{name}" in out or name == "search=hyper_test" and "  search=hyper_test " in out, name


def test_a_hyper_test_file_may_sweep_list_values_no_option_names(tiny_root, tmp_path) -> None:
    """RecBole's hyper.test takes list values (``dropout_probs choice ['[0.3,0.3]',...]``); a list that no named
    option holds is swept as the list itself, and each trial trains with it."""
    (tmp_path / "hyper.test").write_text("dropout_probs choice ['[0.3,0.3]','[0.1,0.2]']\n")
    proc = _run("sweep.py", "-m", "--params-file=hyper.test", *tiny_overrides(tiny_root, "epochs=1"),
                "hydra.sweep.dir=multirun/l", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_trial_lines(proc.stdout + proc.stderr)) == ["model.dropout_probs=[0.1,0.2]",
                                                               "model.dropout_probs=[0.3,0.3]"]
    runs = sorted((tmp_path / "multirun" / "l").glob("*/.hydra/config.yaml"))
    assert sorted(yaml.safe_load(r.read_text())["model"]["dropout_probs"] for r in runs) == [[0.1, 0.2], [0.3, 0.3]]


def test_the_shipped_config_searches_no_folder_of_this_checkout(tmp_path) -> None:
    """``data.extra_roots`` is empty by default: ``../shared/data`` is this project's developers' folder (the
    Makefile passes it), not a place every user's working folder has. A planted ``../shared/data`` beside the
    working folder is not read; the message names ``data.root`` and the key that adds folders."""
    planted = tmp_path / "shared" / "data" / "ml-100k"
    planted.mkdir(parents=True)
    (planted / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = _run("train.py", "data.download=false", "logger=none", cwd=work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    said = " ".join(proc.stderr.split())
    assert "(looked at data/ml-100k/ml-100k.inter)" in said and "data.extra_roots=[<folder>, ...] adds" in said
    assert "shared" not in said and not (work / "outputs").exists()
