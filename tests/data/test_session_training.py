"""Session datasets through the whole stack: config -> readers -> protocol -> train.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from narm_lightning.config.validation import validate
from narm_lightning.errors import DataError
from narm_lightning.training.builders import load_data
from tests.helpers import REPO, compose_train


def test_shared_diginetica_counts_and_paper_protocol(shared_data) -> None:
    cfg = compose_train(["experiment=narm_paper_diginetica", f"data.extra_roots=[{shared_data}]"])
    validate(cfg)
    data = load_data(cfg)
    assert len(data.train) + len(data.valid) == 719_470
    assert len(data.valid) == round(719_470 * 0.1)
    assert len(data.test) == 60_858
    assert data.n_items == 43_097 + 1
    # the valid share is a seeded draw: the same seed gives the same split, another seed another one
    again = load_data(cfg)
    assert (again.valid.target == data.valid.target).all()
    other = load_data(compose_train(["experiment=narm_paper_diginetica", f"data.extra_roots=[{shared_data}]",
                                     "seed=1"]))
    assert not (other.valid.target == data.valid.target).all()


def test_paper_settings() -> None:
    cfg = compose_train(["experiment=narm_paper_yoochoose1_64"])
    assert (cfg.model.embedding_size, cfg.model.hidden_size, cfg.train_batch_size, cfg.epochs) == (50, 100, 512, 30)
    assert (cfg.learning_rate, list(cfg.model.dropout_probs), cfg.model.loss_type) == (0.001, [0.25, 0.5], "CE")
    assert list(cfg.topk) == [10, 20] and cfg.valid_metric == "Recall@20" and cfg.data.dataset == "yoochoose1_64"


def test_missing_raw_yoochoose_says_where_to_get_and_put_it(tmp_path) -> None:
    cfg = compose_train(["data=yoochoose1_4", f"data.root={tmp_path}", "data.extra_roots=[]"])
    with pytest.raises(DataError, match="RecSys Challenge 2015") as info:
        load_data(cfg)
    assert str(tmp_path / "yoochoose" / "yoochoose-clicks.dat") in str(info.value)


def test_pickle_split_through_the_config(shared_data, tmp_path) -> None:
    sample = shared_data / "raw-samples" / "srgnn-pickle-sample"
    (tmp_path / "sample").symlink_to(sample, target_is_directory=True)
    cfg = compose_train(["data=diginetica", "data.dataset=sample", "data.format=session_pickle",
                         f"data.root={tmp_path}", "data.extra_roots=[]"])
    data = load_data(cfg)
    assert len(data.train) + len(data.valid) == 1_205 and len(data.test) == 99


def test_short_training_run_on_yoochoose_1_64_through_train_py(shared_data, tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = ["data=yoochoose1_64", f"data.extra_roots=[{shared_data}]", "epochs=1", "train_batch_size=256",
            "trainer.limit_train_batches=5", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
            "eval_batch_size=512", "topk=[10,20]", "valid_metric=Recall@20", "logger=none",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"]["n_items"] == 37_483
    assert 0 < results["test"]["recall@20"] <= 1 and "mrr@20" in results["test"]


def _sample_root(shared_data, tmp_path):
    (tmp_path / "sample").symlink_to(shared_data / "raw-samples" / "srgnn-pickle-sample", target_is_directory=True)
    return ["data=diginetica", "data.dataset=sample", "data.format=session_pickle", f"data.root={tmp_path}",
            "data.extra_roots=[]", "topk=[10,20]", "valid_metric=Recall@20", "logger=none",
            "trainer.enable_progress_bar=false", "model.embedding_size=16", "model.hidden_size=16"]


def test_valid_ratio_zero_trains_on_every_example_and_tests_the_last_epoch(shared_data, tmp_path) -> None:
    """The refit after a study: no hold-out, no validation loop, the last epoch's weights are tested."""
    from narm_lightning.training.run import train

    args = _sample_root(shared_data, tmp_path)
    cfg = compose_train([*args, "data.valid_ratio=0", "epochs=3"])
    data = load_data(cfg)
    assert (len(data.train), len(data.valid), len(data.test)) == (1_205, 0, 99)
    results = train(cfg, output_dir=tmp_path / "run")
    assert results["model_selection"] == "last epoch (data.valid_ratio=0)"
    assert (results["best_epoch"], results["epochs_run"], results["best_valid"]) == (2, 3, {})
    assert results["best_valid_score"] is None
    assert results["best_checkpoint"].endswith("last.ckpt")
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert 0 <= results["test"]["recall@20"] <= 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["dataset"]["n_valid"] == 0

    # the tested weights are the last epoch's: evaluating last.ckpt again gives the same test metrics
    again = train(compose_train([*args, "data.valid_ratio=0", "epochs=0",
                                 f"init_from={results['best_checkpoint']}"]), output_dir=tmp_path / "again")
    assert again["test"] == pytest.approx(results["test"])
    # with the hold-out, the same seed trains on 90% of the examples and selects on valid
    held = train(compose_train([*args, "epochs=1"]), output_dir=tmp_path / "held")
    assert held["model_selection"] == "best valid recall@20" and held["dataset"]["n_valid"] == 120


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.valid_ratio=-0.1"], r"data.valid_ratio is -0.1; expected a share of the training examples in \[0, 1\)"),
    (["data.valid_ratio=1"], r"data.valid_ratio is 1; expected a share"),
    (["data.valid_ratio=0", "optuna.trial_id=3", "optuna.storage=sqlite:///x.db", "optuna.study_name=s"],
     "data.valid_ratio is 0; expected above 0 in a sweep"),
])
def test_valid_ratio_bounds_and_no_zero_in_a_sweep(overrides, message) -> None:
    from narm_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose_train(["data=diginetica", *overrides]))
    validate(compose_train(["data=diginetica", "data.valid_ratio=0"]))


def test_a_valid_ratio_that_rounds_to_no_examples_is_refused() -> None:
    import numpy as np

    from narm_lightning.data.protocol import build_session_examples

    prefixes = (np.ones(12, dtype=np.int64), np.arange(10), np.full(10, 3))  # ten windows of three ones
    targets = np.ones(10, dtype=np.int64)
    tokens = np.asarray(["[PAD]", "1"], dtype=object)
    with pytest.raises(DataError, match=r"data.valid_ratio=0.01 leaves 0 of 10 training examples"):
        build_session_examples(prefixes, targets, prefixes, targets, 2, tokens, 0.01, 0, 50, "toy")
    none_held = build_session_examples(prefixes, targets, prefixes, targets, 2, tokens, 0.0, 0, 50, "toy")
    assert (len(none_held.train), len(none_held.valid)) == (10, 0)
