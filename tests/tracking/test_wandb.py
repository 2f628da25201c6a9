"""W&B: offline runs that hold the config, the curves and the results; one run per training; state tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from narm_lightning.errors import ConfigError
from narm_lightning.io import flatten
from narm_lightning.model.module import NARMModule
from narm_lightning.tracking.loggers import build_loggers
from narm_lightning.tracking.wandb_runs import check_credentials, check_options, resolve_mode
from narm_lightning.tracking.wandb_summary import log_sweep_summary
from narm_lightning.training.run import train
from tests.helpers import REPO, compose_train, tiny_overrides
from tests.wandb_records import offline_runs


@pytest.fixture()
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, silent, and every W&B file (runs, settings, artifact cache) inside ``tmp_path``."""
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    return tmp_path


def wandb_overrides(root: Path, wandb_dir: Path, *extra: str) -> list[str]:
    """``tiny_overrides`` with W&B on (``logger=`` given once: Hydra refuses a group overridden twice)."""
    logger = next((e for e in extra if e.startswith("logger=")), "logger=wandb")
    rest = [e for e in extra if not e.startswith("logger=")]
    base = [a for a in tiny_overrides(root, "trainer.log_every_n_steps=1") if not a.startswith("logger=")]
    return [*base, logger, f"logger.wandb.dir={wandb_dir}", *rest]


def test_wandb_is_the_default_logger_and_offline_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_train()
    assert list(cfg.logger) == ["wandb"] and cfg.logger.wandb.mode is None
    assert cfg.logger.wandb.project == "narm-lightning" and cfg.logger.wandb.log_model is False
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) is None  # wandb itself reads WANDB_MODE
    assert resolve_mode("offline") == "offline"
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        resolve_mode("cloud")


def test_wandb_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        check_options({"projet": "x"})
    with pytest.raises(ConfigError, match="tags"):
        check_options({"tags": "baseline"})
    with pytest.raises(ConfigError, match="not a known logger"):
        build_loggers({"mlflow": {}}, Path("."))


def test_flatten_gives_dotted_keys() -> None:
    assert flatten({"model": {"hidden_size": 16, "dropout_probs": [0.1]}, "lr": 1, "empty": {}}) == {
        "model.hidden_size": 16, "model.dropout_probs": [0.1], "lr": 1, "empty": {}}


def test_tensorboard_missing_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'narm-lightning\[tensorboard\]'"):
        build_loggers({"tensorboard": {"name": "tb"}}, tmp_path)


def test_two_trainings_give_two_offline_runs_with_config_and_results(tiny_root: Path, offline_wandb: Path) -> None:
    wandb_dir = offline_wandb / "w"
    first = train(compose_train(wandb_overrides(tiny_root, wandb_dir, "epochs=2", "logger=[wandb,csv]",
                                                "logger.wandb.log_model=true", "logger.wandb.tags=[smoke]")),
                  output_dir=offline_wandb / "a")
    second = train(compose_train(wandb_overrides(tiny_root, wandb_dir, "epochs=1", "learning_rate=0.01",
                                                 "logger.wandb.name=second")),
                   output_dir=offline_wandb / "b")
    runs = offline_runs(wandb_dir)
    assert len(runs) == 2 and runs[0].run_id != runs[1].run_id
    by_name = {r.name: r for r in runs}
    assert set(by_name) == {"second", next(n for n in by_name if n.startswith("tiny-"))}
    one, two = by_name.pop("second"), next(iter(by_name.values()))
    for run, results, lr in ((one, second, 0.01), (two, first, 0.001)):
        assert run.exit_code == 0 and "complete" in run.tags and run.job_type == "train"
        # the whole resolved config, flat, plus the size of the model and the data
        assert run.config["learning_rate"] == lr and run.config["model.hidden_size"] == 16
        assert run.config["data.dataset"] == "tiny" and run.config["topk"] == [10]
        assert run.config["n_parameters"] == results["n_parameters"]
        assert run.config["data_stats.n_test"] == 40
        # test metrics and best valid in the summary; valid metrics and train loss in the history
        for name, value in results["test"].items():
            assert run.summary[f"test/{name}"] == pytest.approx(value)
        assert run.summary["best_valid_score"] == pytest.approx(results["best_valid_score"])
        assert run.summary["best_epoch"] == results["best_epoch"]
        assert sum("valid/mrr@10" in row for row in run.history) == results["epochs_run"]
        assert any("train/loss_step" in row for row in run.history)
        assert any("train/loss_epoch" in row for row in run.history)
    assert "smoke" in two.tags and two.artifacts == ["model"] and one.artifacts == []
    assert (offline_wandb / "a" / "csv" / "metrics.csv").exists()


def test_failed_and_pruned_trainings_are_tagged_and_the_next_run_is_separate(
    tiny_root: Path, offline_wandb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb_dir = offline_wandb / "w"
    cfg = compose_train(wandb_overrides(tiny_root, wandb_dir, "epochs=1"))
    for exc, state in ((RuntimeError("boom"), "failed"), (optuna.TrialPruned("pruned at epoch 0"), "pruned")):
        def fail(self, batch, batch_idx, exc=exc):
            raise exc

        monkeypatch.setattr(NARMModule, "training_step", fail)
        with pytest.raises(type(exc)):
            train(cfg, output_dir=offline_wandb / state)
    runs = offline_runs(wandb_dir)
    assert [(r.exit_code, r.tags) for r in runs] == [(1, ["failed"]), (0, ["pruned"])]
    assert runs[0].run_id != runs[1].run_id


def test_a_trial_returns_its_wandb_run_and_cpu_however_it_ends(
    tiny_root: Path, offline_wandb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper records a trial's W&B run and CPU from what its job hands back: the value of a trial that
    completes, the exception of one that is pruned or fails (the job itself writes nothing to the study)."""
    from narm_lightning.cli.apps import run_trial
    from narm_lightning.errors import TrialFailed
    from narm_lightning.sweeping.trials import returned_attrs
    from narm_lightning.training.hostcheck import cpu_description

    wandb_dir = offline_wandb / "w"
    cfg = compose_train(wandb_overrides(tiny_root, wandb_dir, "epochs=1"))
    value = run_trial(cfg, offline_wandb / "complete")
    results = json.loads((offline_wandb / "complete" / "results.json").read_text())
    assert value["results"]["test"] == results["test"] and value["objective"] == results["best_valid_score"]
    carried = [returned_attrs(value)]
    for exc, raised_as in ((optuna.TrialPruned("pruned at epoch 0"), optuna.TrialPruned),
                           (ConfigError("bad"), TrialFailed)):
        def fail(self, batch, batch_idx, exc=exc):
            raise exc

        monkeypatch.setattr(NARMModule, "training_step", fail)
        with pytest.raises(raised_as) as raised:
            run_trial(cfg, offline_wandb / type(exc).__name__)
        carried.append(returned_attrs(raised.value))
    runs = offline_runs(wandb_dir)
    assert len(runs) == 3 and len({r.run_id for r in runs}) == 3
    assert carried == [{"host_cpu": cpu_description(), "wandb_run_id": r.run_id} for r in runs]


def test_logger_none_writes_no_wandb_files(tiny_root: Path, offline_wandb: Path) -> None:
    cfg = compose_train(tiny_overrides(tiny_root, "epochs=1"))
    assert dict(cfg.logger) == {}
    results = train(cfg, output_dir=offline_wandb / "run")
    assert results["epochs_run"] == 1
    assert not [p for p in offline_wandb.rglob("*") if "wandb" in p.name and p.name != "wandb-home"]
    assert not (offline_wandb / "wandb-home").exists() or not any((offline_wandb / "wandb-home").rglob("*.wandb"))


def test_sweep_summary_run_charts_the_study_not_table_sizes(offline_wandb: Path) -> None:
    """The summary run's history is the study's progress (value, best so far, numeric params per trial) and every
    trial's curve per epoch; its tables sit in the summary, so no history key is a table (whose size W&B charts);
    no HTML (plotly.js) goes into it."""
    rows = [
        {"number": "0", "state": "COMPLETE", "learning_rate": "0.001", "d": "light", "value": "0.12", "seed": "1"},
        {"number": "1", "state": "PRUNED", "learning_rate": "0.01", "d": "light", "value": "0.05", "seed": "1"},
        {"number": "2", "state": "COMPLETE", "learning_rate": "0.005", "d": "default", "value": "0.10", "seed": "1"},
        {"number": "3", "state": "COMPLETE", "learning_rate": "0.0001", "d": "light", "value": "0.20", "seed": "1"},
    ]
    curves = [(0, 0, 0.1), (0, 1, 0.12), (1, 0, 0.05), (2, 1, 0.1), (2, 0, 0.09), (3, 0, 0.2)]
    run_id = log_sweep_summary("study-x", rows, {"mode": None, "project": "p", "tags": ["t"],
                                                 "name": "trial-9", "group": "ignored"},
                               offline_wandb / "sweep", summary={"best_value": 0.2}, curves=curves,
                               objective_name="valid mrr@10", params=["learning_rate", "d"])
    (run,) = offline_runs(offline_wandb / "sweep")
    assert run.run_id == run_id and run.group == "study-x" and run.name == "study-x-summary"
    assert run.job_type == "sweep-summary" and run.exit_code == 0
    assert set(run.tags) == {"t", "sweep-summary", "complete"}
    history = [{k: v for k, v in row.items() if not k.startswith("_")} for row in run.history]
    assert not [k for row in history for k, v in row.items() if isinstance(v, dict)], "no table in the history"
    per_trial = [row for row in history if "trial" in row]
    assert [row["trial"] for row in per_trial] == [0, 1, 2, 3]
    assert [row.get("trial/valid mrr@10") for row in per_trial] == [0.12, None, 0.10, 0.20]
    assert [row["trial/best valid mrr@10 so far"] for row in per_trial] == [0.12, 0.12, 0.12, 0.20]
    assert [row["trial/learning_rate"] for row in per_trial] == [0.001, 0.01, 0.005, 0.0001]
    assert not any("trial/d" in row or "trial/seed" in row for row in per_trial), "option names are no chart; seed "\
                                                                                  "is no parameter"
    per_epoch = [row for row in history if "epoch" in row]
    assert per_epoch == [{"epoch": 0, "curve/trial-0": 0.1, "curve/trial-1": 0.05, "curve/trial-2": 0.09,
                          "curve/trial-3": 0.2}, {"epoch": 1, "curve/trial-0": 0.12, "curve/trial-2": 0.1}]
    assert run.summary["n_trials"] == 4 and run.summary["best_value"] == 0.2
    assert run.summary["trials"]["_type"] == "table-file" and run.summary["trials"]["nrows"] == 4
    table = json.loads((run.path.parent / "files" / run.summary["trials"]["path"]).read_text())
    assert table["columns"] == ["number", "state", "learning_rate", "d", "value", "seed"]
    assert not list(run.path.parent.rglob("*.html"))



def _env_without_wandb_keys(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k.endswith("_DIR")}
    return {**env, "HOME": str(home), "NETRC": str(home / ".netrc")}


def test_online_without_an_api_key_is_refused_before_anything_is_written(tiny_root, tmp_path) -> None:
    """The red-team's ``logger.wandb.mode=online`` with no key: wandb's UsageError traceback in the first epoch and
    a run folder with a config but no results. Now one paragraph, exit 2, no folder; a key in the netrc that
    ``wandb login`` writes is enough to get past the check."""
    args = [a for a in tiny_overrides(tiny_root, "epochs=1") if not a.startswith("logger=")]
    run = tmp_path / "run"
    env = _env_without_wandb_keys(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args, "logger.wandb.mode=online",
                           f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "logger.wandb.mode is 'online' but no W&B API key is configured for api.wandb.ai" in proc.stderr
    assert not run.exists()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    os.chmod(tmp_path / ".netrc", 0o600)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in [k for k in os.environ if k.startswith("WANDB_") and not k.endswith("_DIR")]:
            mp.delenv(key)
        check_credentials({"mode": "online"})  # the netrc entry counts
        (tmp_path / ".netrc").write_text("machine example.org\n  login user\n  password x\n")
        with pytest.raises(ConfigError, match="no W&B API key"):
            check_credentials({"mode": "online"})
        check_credentials({"mode": "offline"})  # offline needs none
