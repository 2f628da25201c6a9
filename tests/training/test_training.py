from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from narm_lightning.training.run import train
from tests.helpers import REPO, compose_train, tiny_overrides


def test_train_py_through_hydra_writes_results(tiny_root, tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = [a for a in tiny_overrides(tiny_root, "epochs=3") if not a.startswith("logger=")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, "logger=csv", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid_metric"] == "mrr@10"
    assert set(results["test"]) == {"recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"}
    # the best epoch and its figures agree with what Lightning's CSV logger recorded each epoch
    rows = [r for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r.get("valid/mrr@10")]
    logged = [float(r["valid/mrr@10"]) for r in rows]
    assert len(logged) == 3
    assert results["best_epoch"] == logged.index(max(logged))
    assert results["best_valid"]["mrr@10"] == results["best_valid_score"] == pytest.approx(max(logged), abs=1e-6)
    assert results["dataset"]["n_test"] == 40
    # wall time per epoch (this process's 3) and peak memory, for benchmark tables built from runs
    assert results["epochs_timed"] == 3
    assert results["seconds_per_epoch"] == pytest.approx(results["fit_seconds"] / 3, abs=1e-3)
    assert 50 < results["peak_rss_mib"] < 24 * 1024  # torch alone is > 50 MiB resident
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "csv" / "metrics.csv").exists()
    assert "best valid (epoch" in proc.stdout and "test" in proc.stdout
    # the checkpoint is plain tensors + data: loads with the safe default of current torch
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["n_items"] == 31
    assert ckpt["item_tokens"][0] == "[PAD]" and len(ckpt["item_tokens"]) == 31


def test_training_learns_and_is_reproducible(tiny_root, tmp_path) -> None:
    cfg = compose_train(tiny_overrides(tiny_root, "epochs=15", "learning_rate=0.01", "stopping_step=20"))
    first = train(cfg, output_dir=tmp_path / "a")
    second = train(cfg, output_dir=tmp_path / "b")
    assert first["test"] == second["test"]
    assert first["best_valid"] == second["best_valid"]
    # next item = current + 1 is learnable: far above the 10/30 chance of a random top-10
    assert first["test"]["recall@10"] > 0.8


def test_early_stopping_and_best_checkpoint(tiny_root, tmp_path) -> None:
    cfg = compose_train(tiny_overrides(tiny_root, "epochs=50", "learning_rate=1e-12", "stopping_step=1",
                                       "learner=sgd"))
    results = train(cfg, output_dir=tmp_path / "run")
    # with lr ~0 nothing improves after epoch 0: RecBole stops after stopping_step + 1 non-improving epochs
    assert results["epochs_run"] == 3
    assert results["epochs_timed"] == 3  # an early stop still counts the epochs run, not the 50 asked for
    assert results["best_epoch"] == 0


def test_init_from_our_checkpoint_and_mismatch_is_clear(tiny_root, tmp_path) -> None:
    import pytest

    from narm_lightning.errors import ConfigError

    first = train(compose_train(tiny_overrides(tiny_root, "epochs=2")), output_dir=tmp_path / "a")
    again = train(compose_train(tiny_overrides(tiny_root, "epochs=0", f"init_from={first['best_checkpoint']}")),
                  output_dir=tmp_path / "b")
    assert again["test"] == first["test"]
    with pytest.raises(ConfigError, match="do not fit this model"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=0", "model.hidden_size=8",
                                           f"init_from={first['best_checkpoint']}")), output_dir=tmp_path / "c")


@pytest.mark.parametrize("metrics", ["[Recall,MRR]", "[Recall,ItemCoverage]"])
def test_evaluation_scores_one_eval_batch_block_at_a_time(tiny_root, monkeypatch, metrics) -> None:
    """Full-sort evaluation never materialises more than eval_batch_size x n_items scores at once, and none at
    all when only the target's rank is needed (the accuracy metrics: ranked from the session vectors block by
    block, ``target_ranks_of_product``); the top-K lists of the beyond-accuracy metrics take the scores."""
    import pytorch_lightning as pl

    from narm_lightning.model.metrics import RankMetrics
    from narm_lightning.training.builders import build_datamodule, build_module, load_data

    cfg = compose_train(tiny_overrides(tiny_root, "eval_batch_size=16", f"metrics={metrics}"))
    data = load_data(cfg)
    calls: list[tuple[int, tuple[int, ...] | None]] = []
    update = RankMetrics.update

    def recording_update(self, scores, target, ranks=None):  # type: ignore[no-untyped-def]
        calls.append((target.numel(), None if scores is None else tuple(scores.shape)))
        return update(self, scores, target, ranks=ranks)

    monkeypatch.setattr(RankMetrics, "update", recording_update)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    module = build_module(cfg, data.n_items, train_targets=data.train.target, all_targets=data.train.target)
    datamodule = build_datamodule(cfg, data)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert sum(rows for rows, _ in calls) == len(data.valid) + len(data.test)
    assert max(rows for rows, _ in calls) == 16
    if "ItemCoverage" in metrics:
        assert {shape[1] for _, shape in calls} == {data.n_items} and max(s[0] for _, s in calls) == 16
    else:
        assert {shape for _, shape in calls} == {None}


def test_the_pipeline_builders_each_work_alone(tiny_root, tmp_path) -> None:
    """``train`` is plan -> data -> module -> callbacks -> loggers -> trainer -> fit -> test -> results."""
    from narm_lightning.training.builders import build_callbacks, build_trainer
    from narm_lightning.training.checkpointing import RunState
    from narm_lightning.training.plan import plan_run
    from narm_lightning.training.precision import resolve_precision
    from narm_lightning.training.results import describe_run
    from narm_lightning.training.run import read_data

    cfg = compose_train(tiny_overrides(tiny_root, "epochs=1"))
    plan = plan_run(cfg, tmp_path / "run")
    assert plan.run_dir == tmp_path / "run" and plan.resume_ckpt is None and plan.valid_key == "mrr@10"
    data, fingerprint = read_data(plan)
    assert len(fingerprint) == 64 and fingerprint == data.fingerprint()
    line = describe_run(cfg, data.stats, 12_345)
    assert line.startswith("tiny: 40 users, 30 items, 480 interactions; examples train 360 / valid 40 / test 40")
    assert line.endswith(f"NARM: 12,345 parameters, precision {resolve_precision(cfg.trainer)}.")
    callbacks = build_callbacks(plan, validating=True, state=RunState())
    assert callbacks.best is not None and callbacks.best.monitor == "valid/mrr@10"
    refit = build_callbacks(plan, validating=False, state=RunState())
    # a refit has no best checkpoint and no early stopping; Ctrl-C is still taken at a batch boundary
    assert refit.best is None and [type(c).__name__ for c in refit.all()] == ["RunCheckpoint", "DeferredInterrupt",
                                                                             "EpochLog", "RunState"]
    trainer = build_trainer(cfg, callbacks.all(), [], plan.run_dir, validating=True)
    assert trainer.max_epochs == 1 and trainer.limit_val_batches == 1.0


def test_the_tensorboard_logger_writes_event_files(tiny_root, tmp_path) -> None:
    overrides = [a for a in tiny_overrides(tiny_root, "epochs=1") if not a.startswith("logger=")]
    train(compose_train([*overrides, "logger=tensorboard"]), output_dir=tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_recboles_clip_grad_norm_and_metric_decimal_place(tmp_path) -> None:
    from narm_lightning.recbole.config import map_recbole_config
    from narm_lightning.training.builders import build_trainer
    from narm_lightning.training.results import format_results

    trainer = build_trainer(compose_train(["clip_grad_norm={max_norm:5}", "logger=none"]), [], [], tmp_path, True)
    assert trainer.gradient_clip_val == 5 and trainer.gradient_clip_algorithm == "norm"
    assert build_trainer(compose_train(["logger=none"]), [], [], tmp_path, True).gradient_clip_val is None
    table = format_results({"best_valid": {"mrr@10": 0.123456}, "test": {"mrr@10": 0.1}, "best_epoch": 3}, 2)
    assert "0.12" in table and "0.1235" not in table and "0.10" in table
    mapped = map_recbole_config({"clip_grad_norm": {"max_norm": 5, "norm_type": 2}, "metric_decimal_place": 6,
                                 "tail_ratio": 0.2})
    assert mapped == {"clip_grad_norm": {"max_norm": 5, "norm_type": 2}, "metric_decimal_place": 6,
                      "tail_ratio": 0.2}


def test_the_protocol_card_travels_with_every_figure(tiny_root, tmp_path) -> None:
    """results.json and the checkpoint say what the figures were measured on, the file's SHA-256 included,
    and that the valid split (never test) selected the model."""
    import hashlib

    from narm_lightning.data.card import check_card

    results = train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=tmp_path / "run")
    card = results["protocol"]
    inter = tiny_root / "tiny" / "tiny.inter"
    assert card["files"] == [{"path": str(inter), "sha256": hashlib.sha256(inter.read_bytes()).hexdigest()}]
    assert (card["split"], card["order"], card["group_by"], card["mode"]) == ({"LS": "valid_and_test"}, "TO", "user",
                                                                             "full")
    assert card["max_item_list_length"] == 50 and card["tie_order"].startswith("recbole: ")
    assert card["model_selection"] == {"split": "valid", "metric": "MRR@10"}
    assert json.loads((tmp_path / "run" / "results.json").read_text())["protocol"] == card
    assert torch.load(results["best_checkpoint"], weights_only=True)["protocol"] == card
    with pytest.raises(AssertionError, match="only the valid split"):
        check_card({**card, "model_selection": {"split": "test"}})


def test_eval_args_test_only_trains_without_validation_and_tests_the_last_epoch(tiny_root, tmp_path) -> None:
    results = train(compose_train(tiny_overrides(tiny_root, "epochs=2", "eval_args={split:{LS:test_only}}")),
                    output_dir=tmp_path / "run")
    assert results["model_selection"].startswith("last epoch") and results["best_valid"] == {}
    card = results["protocol"]
    assert card["split"] == {"LS": "test_only"} and card["model_selection"]["split"] is None
    assert results["dataset"]["n_valid"] == 0 and results["test"]


def test_a_recbole_file_eval_args_is_filled_the_way_recbole_fills_it(tmp_path) -> None:
    """RecBole replaces its sequential eval_args with the file's and fills the missing keys from its general
    defaults, so a file with only `split` means order RO, which RecBole refuses for NARM: refused here too."""
    from narm_lightning.config.validation import validate
    from narm_lightning.errors import ConfigError
    from narm_lightning.training.plan import with_recbole_config_file

    path = tmp_path / "r.yaml"
    path.write_text("eval_args:\n  split: {RS: [8, 1, 1]}\n")
    with pytest.raises(ConfigError, match="eval_args.order is 'RO'; expected TO: RecBole 1.2.1 refuses RO"):
        validate(with_recbole_config_file(compose_train([f"config_file={path}"])))
    path.write_text("eval_args:\n  split: {RS: [8, 1, 1]}\n  order: TO\n  group_by: none\n")
    cfg = with_recbole_config_file(compose_train([f"config_file={path}"]))
    validate(cfg)
    assert dict(cfg.eval_args) == {"split": {"RS": [8, 1, 1]}, "order": "TO", "group_by": "none", "mode": "full"}


def test_testing_runs_under_the_grad_mode_of_validation(tiny_root, tmp_path, monkeypatch) -> None:
    """Fit's validation runs under no_grad; testing must too, not under inference_mode: the fused GRU's compiled
    inference kernel would see tensors of other dispatch keys and be compiled again at test, in every process."""
    from narm_lightning.model.module import NARMModule

    modes: dict[str, set[tuple[bool, bool]]] = {"validation_step": set(), "test_step": set()}
    for name in modes:
        original = getattr(NARMModule, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            modes[_name].add((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(NARMModule, name, spy)
    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=tmp_path / "run")
    assert modes["validation_step"] == modes["test_step"] == {(False, False)}, modes
