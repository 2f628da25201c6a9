"""Faults: torn writes, NaN losses, and nothing in the package that runs code named by its inputs."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import narm_lightning.checkpointing as checkpointing
import narm_lightning.io as nio
from narm_lightning.checkpointing import AtomicCheckpointIO
from narm_lightning.training import train
from tests.helpers import REPO, compose_train, tiny_overrides


class _TornFile(io.BufferedWriter):
    """Writes half of what it is given, then fails: a kill or a full disk in the middle of a write."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        super().write(bytes(data)[: len(data) // 2])
        self.flush()
        raise OSError(28, "No space left on device")


def _tearing_fdopen(fd: int, mode: str = "r", *args, **kwargs):
    return _TornFile(io.FileIO(fd, "w"))


@pytest.mark.parametrize("kind", ["checkpoint", "results"])
def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, monkeypatch, kind) -> None:
    target = tmp_path / ("last.ckpt" if kind == "checkpoint" else "results.json")
    old = {"epoch": 1, "w": torch.arange(10.0)}
    if kind == "checkpoint":
        AtomicCheckpointIO().save_checkpoint(old, target)
    else:
        nio.write_json_atomic(target, {"epoch": 1})
    before = target.read_bytes()
    monkeypatch.setattr(nio.os, "fdopen", _tearing_fdopen)
    with pytest.raises(OSError, match="No space left"):
        if kind == "checkpoint":
            AtomicCheckpointIO().save_checkpoint({"epoch": 2, "w": torch.zeros(10_000)}, target)
        else:
            nio.write_json_atomic(target, {"epoch": 2, "pad": "x" * 10_000})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name], "no temp file is left behind"
    if kind == "checkpoint":
        assert torch.equal(torch.load(target, weights_only=True)["w"], old["w"])
    else:
        assert json.loads(target.read_text()) == {"epoch": 1}


def test_a_real_run_writes_every_checkpoint_atomically(tiny_root, tmp_path, monkeypatch) -> None:
    written: list[str] = []

    def recording(path, data):
        written.append(Path(path).name)
        return nio.write_bytes_atomic(path, data)

    monkeypatch.setattr(checkpointing, "write_bytes_atomic", recording)
    train(compose_train(tiny_overrides(tiny_root, "epochs=2")), output_dir=tmp_path / "run")
    assert {"best.ckpt", "last.ckpt"} <= set(written)
    assert written.count("last.ckpt") == 2, "last.ckpt is written after every epoch"
    assert os.stat(tmp_path / "run" / "checkpoints" / "last.ckpt").st_mode & 0o044, "readable like any file"


def test_nan_loss_is_one_paragraph_and_a_non_zero_exit(tiny_root, tmp_path) -> None:
    args = tiny_overrides(tiny_root, "epochs=3", "learning_rate=1e30", "learner=sgd")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: training stopped: the loss became nan at epoch 0" in proc.stderr
    assert "Lower learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


# --- no code from configs, data files or command lines is ever run --------------------------------------

# (file, call) pairs allowed to deserialize: each uses a class-refusing unpickler.
ALLOWED = {
    # the one module that unpickles: an allowlist unpickler (RecBole files) and torch's weights-only one
    ("narm_lightning/safe_load.py", "torch.load"),
    ("narm_lightning/safe_load.py", "pickle.Unpickler"),
    # RecBole config files: yaml.load with RecBoleYamlLoader, a SafeLoader subclass (asserted below)
    ("narm_lightning/recbole/config.py", "yaml.load"),
    # samplers/pruners: _target_ is checked to be a class of optuna.samplers / optuna.pruners first
    ("narm_lightning/sweeping/sweeper.py", "instantiate"),
    ("narm_lightning/sweeping/study.py", "instantiate"),
    # hydra.sweeper.custom_search_space: the user's own function, named in their sweep config (a documented
    # key of hydra-optuna-sweeper); nothing from data files or trial values
    ("narm_lightning/sweeping/sweeper.py", "get_method"),
}
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "instantiate", "get_class", "get_method", "locate"}
FORBIDDEN_ATTRS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "torch.load", "yaml.load", "yaml.unsafe_load",
    "marshal.load", "marshal.loads", "os.system", "os.popen", "importlib.import_module", "dill.load", "dill.loads",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _offences(path: Path, rel: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            safe_torch_load = name == "torch.load" and any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in node.keywords)
            if (name in FORBIDDEN_NAMES or name in FORBIDDEN_ATTRS or shell) and not safe_torch_load:
                if (rel, name) not in ALLOWED:
                    found.append(f"{rel}:{node.lineno}: {name}(...)")
        elif isinstance(node, ast.Attribute) and _dotted(node) == "pickle.Unpickler":
            if (rel, "pickle.Unpickler") not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: pickle.Unpickler")
    return found


def test_no_eval_exec_or_unrestricted_deserialization_in_the_package() -> None:
    files = [p for p in REPO.rglob("*.py")
             if not {"tests", ".venv", ".venv-recbole", "outputs", "multirun", ".git"} & set(p.relative_to(REPO).parts)]
    assert any(p.name == "training.py" for p in files)
    offences = [o for p in files for o in _offences(p, p.relative_to(REPO).as_posix())]
    assert offences == []


def test_the_scanner_catches_what_it_should(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch\nx = eval('1')\npickle.loads(b'')\ntorch.load('f')\n"
                   "torch.load('f', weights_only=True)\nimport subprocess\nsubprocess.run('ls', shell=True)\n")
    assert [o.split(": ")[1] for o in _offences(bad, "bad.py")] == [
        "eval(...)", "pickle.loads(...)", "torch.load(...)", "subprocess.run(...)"
    ]


def test_the_recbole_yaml_loader_is_safe() -> None:
    import yaml

    from narm_lightning.recbole.config import RecBoleYamlLoader

    assert issubclass(RecBoleYamlLoader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=RecBoleYamlLoader)  # noqa: S506
