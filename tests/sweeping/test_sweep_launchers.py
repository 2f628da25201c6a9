"""Our sweeper with hydra-submitit-launcher: the SLURM config (conf/hydra/launcher/slurm.yaml) and a real
sweep through ``submitit_local`` (skipped when the optional ``slurm`` extra is not installed)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from narm_lightning import CONF_DIR
from narm_lightning.config.schema import register

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]' to test it")

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


class _Submitted(Exception):
    """Raised instead of submitting to SLURM; carries the executor the launcher configured."""

    def __init__(self, executor: Any) -> None:
        super().__init__("not submitted")
        self.executor = executor


@pytest.mark.parametrize("config_name", ["sweep", "train"])
def test_slurm_launcher_config_makes_the_intended_sbatch_script(
    config_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.chdir(tmp_path)  # the launcher creates the (relative) sweep dir
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.setup=[module load cuda]"]
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(node, dict) and node["_target_"] == SLURM_TARGET
    # Our values win over the plugin's defaults (timeout 60, array_parallelism 256, no GPU).
    assert (node["timeout_min"], node["gpus_per_node"], node["cpus_per_task"], node["mem_gb"]) == (720, 1, 8, 32)
    assert (node["array_parallelism"], node["max_num_timeout"], node["tasks_per_node"]) == (16, 0, 1)
    assert str(node["submitit_folder"]).endswith("/.submitit/%j") and "${" not in str(node["submitit_folder"])
    if config_name == "sweep":
        assert cfg.hydra.sweeper._target_.endswith("narm_optuna_sweeper.OptunaSweeper")

    # Run the plugin's real launch() up to the submission: submitit validates every key against sbatch.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists

    def capture(executor: Any, fn: Any, *iterables: Any) -> Any:
        raise _Submitted(executor)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["learning_rate=0.01"], ["learning_rate=0.001"]], initial_job_idx=0)
    script = submitted.value.executor._executor._make_submission_file_text("python -m trial", "uid")
    for flag in [
        "#SBATCH --partition=gpu",
        "#SBATCH --time=720",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --job-name={config_name}",
    ]:
        assert flag in script.splitlines(), f"{flag} missing from:\n{script}"
    assert "# setup\nmodule load cuda" in script


def test_sweep_through_submitit_local_runs_trials_in_subprocesses(
    run_toy: Callable[..., subprocess.CompletedProcess[str]],
    load_toy_study: Callable[[], optuna.Study],
    tmp_path: Path,
) -> None:
    run_toy(
        "hydra/launcher=submitit_local",
        "hydra.sweep.dir=multirun/s",
        "hydra/sweeper/sampler=grid",
        "x=1,2",
        "fail_x=1",
        "y=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",  # one batch: two submitit jobs running side by side
        "hydra.sweeper.max_failure_rate=0.5",
    )
    trials = {t.params["x"]: t for t in load_toy_study().trials}
    assert sorted(trials) == [1, 2]
    # A return value and an exception both came back from the job processes and were told to the study.
    assert trials[2].state == TrialState.COMPLETE and trials[2].value == 1.0  # (2-2)^2 + y
    assert trials[1].state == TrialState.FAIL and "ValueError: toy failure for x=1" in trials[1].user_attrs["error"]
    assert {Path(t.user_attrs["output_dir"]).name for t in trials.values()} == {"0", "1"}
    # Submitit really ran them: one job folder with a result pickle per trial.
    results = sorted((tmp_path / "multirun" / "s" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2 and len({r.parent.name for r in results}) == 2
