"""The project as a user installs it: a wheel with the configs inside, console scripts that work from any
folder, and a ``--help`` that says what each program does and lists its keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_overrides


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel of this checkout, installed (no deps: this venv has them) into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy of the tracked files: building in the checkout would leave build/ there
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(root / "dist"), str(source)], check=True, capture_output=True, text=True, timeout=300)
    # a module or config group left out of pyproject's packages list: setuptools ships it with a warning only
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr, built.stderr[-3000:]
    wheel = next((root / "dist").glob("narm_lightning-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return root / "site"


def _script(site: Path, name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(site / "bin" / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_ships_every_config(installed) -> None:
    shipped = {p.relative_to(installed / "narm_lightning" / "conf").as_posix()
               for p in (installed / "narm_lightning" / "conf").rglob("*.yaml")}
    in_checkout = {p.relative_to(REPO / "conf").as_posix()
                   for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_checkout and {"train.yaml", "sweep.yaml", "data/ml-100k.yaml"} <= shipped
    # one tree: conf/ at the top of the checkout is what the wheel carries, byte for byte; the package has no copy
    assert all((installed / "narm_lightning" / "conf" / n).read_bytes() == (REPO / "conf" / n).read_bytes()
               for n in shipped)
    assert not (REPO / "narm_lightning" / "conf").exists()
    assert {"narm-train", "narm-sweep", "narm-recommend"} <= {p.name for p in (installed / "bin").iterdir()}


@pytest.mark.parametrize(("program", "needles"), [
    ("narm-train", ["Train NARM", "model=narm", "learning_rate=0.001", "optimizer step size",
                    "model.hidden_size=128", "data.max_item_list_length=50", "Examples:", "narm-train resume="]),
    ("narm-sweep", ["Hyper-parameter search", "hydra.sweeper.n_trials=null", "--params-file=hyper.test",
                    "learning_rate=0.001"]),
    ("narm-recommend", ["Top-K recommendations", "k=20", "exclude_seen=false", "Export the scoring model",
                        "formats=[torchscript]"]),
])
def test_help_says_what_and_lists_the_keys(installed, tmp_path, program, needles) -> None:
    proc = _script(installed, program, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for needle in needles:
        assert needle in proc.stdout, needle
    assert "powered by Hydra" not in proc.stdout and "optuna.trial_id" not in proc.stdout
    assert not any(tmp_path.iterdir()), "--help writes nothing"


def test_the_installed_programs_train_and_serve_from_any_folder(installed, tiny_root, tmp_path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = _script(installed, "narm-train", *tiny_overrides(tiny_root, "epochs=1"), "hydra.run.dir=run", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((work / "run" / "results.json").read_text())
    assert (work / "run" / "train.log").exists() and results["test"]
    served = _script(installed, "narm-recommend", f"ckpt={results['best_checkpoint']}", "sessions=[i1]", "k=3",
                     cwd=work)
    assert served.returncode == 0, served.stderr[-2000:]
    assert len(served.stdout.split("\t")[1].split()) == 3


def test_ci_fails_rather_than_skips_without_the_shared_data(tmp_path, monkeypatch) -> None:
    from tests.helpers import need_shared

    monkeypatch.delenv("NARM_REQUIRE_SHARED_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception):
        need_shared(tmp_path / "absent")
    monkeypatch.setenv("NARM_REQUIRE_SHARED_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="NARM_REQUIRE_SHARED_DATA=1"):
        need_shared(tmp_path / "absent")
    assert "export NARM_REQUIRE_SHARED_DATA=1" in (REPO / ".ci" / "run").read_text()
