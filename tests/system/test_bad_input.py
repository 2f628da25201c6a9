"""Hostile-but-realistic input (issue 18): one paragraph naming the key or file, exit 2, nothing left behind,
no memory out of proportion to the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import narm_lightning.io as nio
from narm_lightning.config.validation import validate
from narm_lightning.data.atomic import read_atomic
from narm_lightning.data.sources import load_sessions, load_user_sequences
from narm_lightning.errors import ConfigError, DataError, WriteFailed
from narm_lightning.recbole.config import read_recbole_file
from narm_lightning.recbole.hyper import read_hyper_file
from narm_lightning.sweeping.storage import make_storage
from narm_lightning.training.run import train
from tests.conftest import write_inter
from tests.helpers import REPO, compose_train, tiny_overrides
from tests.system.test_fuzz_readers import no_hang


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_paragraph(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in error[0], error[0]


# --- config values refused up front --------------------------------------------------------------------


@pytest.mark.parametrize(("override", "message"), [
    ("seed=-1", "seed is -1; expected an integer in [0, 4294967295]"),
    ("seed=8589934592", "seed is 8589934592; expected an integer in [0, 4294967295]"),
    ("eval_step=5", "eval_step is 5 but epochs is 1: no epoch would be validated"),
    ("data.dataset=../esc", "data.dataset is '../esc'; expected a dataset name (a folder under data.root"),
    ("data.dataset=a/b", "data.dataset is 'a/b'"),
    ("data.item_id_field=user_id", "data.user_id_field, data.item_id_field and data.time_field are 'user_id', "
                                   "'user_id', 'timestamp'; expected three different columns"),
])
def test_bad_values_are_refused_before_data(tiny_root, override, message) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_train(tiny_overrides(tiny_root, "epochs=1", override)))
    assert message in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal is for machines without")
def test_gpu_without_cuda_is_refused(tiny_root) -> None:
    with pytest.raises(ConfigError, match="trainer.accelerator is 'gpu' but this machine has no CUDA device"):
        validate(compose_train(tiny_overrides(tiny_root, "trainer.accelerator=gpu")))


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.limit_train_batches=0.0001", "trainer.limit_train_batches is 0.0001, which of 6 batches is 0.0006: "
                                           "no batch would run"),
    ("topk=[10,50]", "topk holds [50] but the dataset has only 30 items"),
])
def test_what_only_the_data_tells_is_refused_before_any_file(tiny_root, tmp_path, override, message) -> None:
    with pytest.raises(ConfigError, match="Invalid config for tiny") as info:
        train(compose_train(tiny_overrides(tiny_root, "epochs=1", override)), output_dir=tmp_path / "run")
    assert message in str(info.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_the_command_line_leaves_no_run_folder(tiny_root, tmp_path) -> None:
    proc = _run("train.py", *tiny_overrides(tiny_root, "seed=-1", "trainer.limit_train_batches=0.0001"),
                cwd=tmp_path)
    _one_paragraph(proc, "seed is -1")
    assert not (tmp_path / "outputs").exists()
    proc = _run("train.py", *tiny_overrides(tiny_root, "epochs=1", "trainer.limit_train_batches=0.0001"),
                cwd=tmp_path)
    _one_paragraph(proc, "no batch would run")
    assert not (tmp_path / "outputs").exists()


# --- config files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b"\x00\x01\x02binary", r"line 1: contains a NUL byte"),
    (b"\xff\xfe not utf-8", r"is not UTF-8 text"),
    (b'dropout_probs: "[0.25"\n', r"dropout_probs is '\[0.25'; expected a list like \[0.25, 0.5\]"),
    (b"seed: 2020-01-01\n", r"seed is '2020-01-01'; expected an integer"),
    (b"metrics: !!set {Recall, MRR}\n", r"metrics holds a set"),
    (b"learning_rate: [1\n", r"not valid YAML"),
])
def test_bad_recbole_config_files_are_one_paragraph(tiny_root, tmp_path, content, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises((ConfigError, DataError), match=message):
        train(compose_train(tiny_overrides(tiny_root, "epochs=1", f"config_file={path}")), output_dir=tmp_path / "r")


def test_recbole_numbers_are_read_as_recbole_reads_them(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("learning_rate: 1e-3\nweight_decay: 2E-5\ntopk: 10\n")
    assert read_recbole_file(path) == {"learning_rate": 0.001, "weight_decay": 2e-5, "topk": 10}


def test_a_binary_params_file_is_one_paragraph(tmp_path) -> None:
    path = tmp_path / "hyper.test"
    path.write_bytes(b"\x00\x9f\x92\x96 garbage")
    with pytest.raises(DataError, match=r"hyper\.test, line 1: contains a NUL byte"):
        read_hyper_file(path)
    proc = _run("sweep.py", "-m", f"--params-file={path}", cwd=tmp_path)
    _one_paragraph(proc, "contains a NUL byte")


@pytest.mark.parametrize(("lines", "message"), [
    ("learning_rate loguniform -1000,1000\n", "natural-log bounds outside [-700, 700]"),
    ("learning_rate quniform 0,1,1e-300\n", "quniform 0,1,1e-300 has about 1e+300 values, more than 1,000"),
    ("learning_rate quniform 0,20000,1\n", "has about 2e+04 values, more than 1,000"),
    ("learning_rate quniform 0.001,1,0.001\nweight_decay quniform 0.001,1,0.001\n",
     "a grid of 1,000,000 points (learning_rate 1,000 x weight_decay 1,000), more than 100,000"),
])
def test_a_search_space_out_of_proportion_is_refused_at_once(tmp_path, lines, message) -> None:
    """The red-team's hyper.test lines: an OverflowError traceback, 10^8 grid points (MemoryError after 36 s).
    Each is refused before a list or a study is made (the guard fails the test on a hang)."""
    path = tmp_path / "hyper.test"
    path.write_text(lines)
    with no_hang(60):
        proc = _run("sweep.py", "-m", f"--params-file={path}", cwd=tmp_path)
    _one_paragraph(proc, message)


def test_a_thousand_value_line_checks_its_extremes_not_every_value() -> None:
    """Before the first trial the sweeper composes configs to check the space: every group option, but of a
    numeric line only its extremes (one composition costs ~0.2 s: 1,000 of them kept the console silent for
    minutes)."""
    from optuna.distributions import CategoricalDistribution

    from narm_lightning.sweeping.space import SearchSpace

    lr = [round(0.001 * i, 3) for i in range(1, 1001)]
    space = SearchSpace({"learning_rate": CategoricalDistribution(lr),
                         "n_layers": CategoricalDistribution(["1", "2", "3"]),
                         "seed": CategoricalDistribution([1, 2, 3, 4, 5, 2.5])}, [])
    points = space.check_points(frozenset({"n_layers"}))
    assert sorted({p["learning_rate"] for p in points}) == [0.001, 1.0]
    assert sorted({p["n_layers"] for p in points}) == ["1", "2", "3"]  # each option composed
    assert sorted({p["seed"] for p in points}) == [1, 2.5, 5]  # extremes, and a float beside the ints
    assert len(points) == 2 * 3 * 3


@pytest.mark.parametrize(("args", "message"), [
    (["data=diginetica", "data.download=false"], "data.download is not a key of this dataset's config: it belongs "
                                                 "to RecBole atomic datasets (data=ml-100k, or data.format=atomic)"),
    (["data.test_days=7"], "data.test_days is not a key of this dataset's config: it belongs to session datasets"),
])
def test_a_key_of_the_other_kind_of_dataset_says_so(tmp_path, args, message) -> None:
    """It got "(did you mean data.download?)" for data.download itself."""
    _one_paragraph(_run("train.py", *args, "logger=none", cwd=tmp_path), message)


# --- storages and the sweeper ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite:////etc/passwd/x.db", r"\(/etc/passwd\) is a file, not a folder"),
    ("sqlite:///{tmp}/new/deeper/x.db", r"deeper\) does not exist; expected an existing folder"),
    ("mysql://u:secret@localhost/db", r"'mysql://u:\*\*\*@localhost/db' needs a database driver that is not installed"),
])
def test_bad_storages_are_refused_and_create_nothing(tmp_path, url, message) -> None:
    pytest.importorskip("sqlalchemy")
    with pytest.raises(ConfigError, match=message):
        make_storage(url.format(tmp=tmp_path), heartbeat_interval=None, grace_period=None)
    assert not (tmp_path / "new").exists()


def test_a_sweeper_error_is_one_paragraph(tmp_path, tiny_root) -> None:
    proc = _run("sweep.py", "-m", *tiny_overrides(tiny_root, "epochs=1"), "hydra/sweeper/sampler=grid",
                "learning_rate=interval(0.001,0.01)", "hydra.sweeper.study_name=g", cwd=tmp_path)
    _one_paragraph(proc, "the grid sampler needs a finite set of values", "'learning_rate' is continuous")


def test_a_full_disk_is_one_paragraph_naming_the_file(tiny_root, tmp_path, monkeypatch) -> None:
    real = nio.os.fdopen

    def full(fd: int, *args: object, **kwargs: object):
        os.close(fd)
        raise OSError(28, "No space left on device")

    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=tmp_path / "first")
    monkeypatch.setattr(nio.os, "fdopen", full)
    with pytest.raises(WriteFailed, match=r"config\.yaml: could not be written \(No space left on device\); the file "
                                          r"as it was before, if any, is intact"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=tmp_path / "second")
    monkeypatch.setattr(nio.os, "fdopen", real)
    assert not list((tmp_path / "second").glob(".*.tmp"))


# --- data: memory in proportion, nothing dropped silently, regular files only ------------------------------


def test_a_huge_token_costs_its_own_size_not_rows_times_it(tmp_path) -> None:
    rows = [(f"u{u}", f"i{t}", float(t)) for u in range(3) for t in range(5)]
    path = write_inter(tmp_path / "big" / "big.inter", rows)
    with path.open("a") as fh:
        fh.write("u0\t" + "x" * 10_000_000 + "\t9\n")
    table = read_atomic(path, {"user_id": "token", "item_id": "token", "timestamp": "float"})
    assert table.columns["item_id"].dtype == object  # a str array would be 16 rows x 40 MB each
    data = load_user_sequences("big", str(tmp_path), [], "user_id", "item_id", "timestamp", 50, download=False)
    assert data.n_items == 7


def test_a_header_of_a_million_fields_is_read_in_linear_time_and_named_briefly(tmp_path) -> None:
    """The red-team's 10^6-field header (40 k fields took 37 s: a quadratic duplicate check). The refusal names
    the first fields and the count, not a megabyte of header."""
    path = tmp_path / "wide" / "wide.inter"
    path.parent.mkdir()
    path.write_text("\t".join(f"f{i}:token" for i in range(1_000_000)) + "\n" + "\t".join(["x"] * 1_000_000) + "\n")
    with no_hang(60), pytest.raises(DataError, match=r"the header has no field user_id, item_id, timestamp \(it has: "
                                                    r"f0:token, .*, \.\.\. \(1,000,000 fields\)\)") as info:
        read_atomic(path, {"user_id": "token", "item_id": "token", "timestamp": "float"})
    assert len(str(info.value)) < 600


def test_a_window_far_beyond_the_data_costs_nothing_and_changes_nothing(tiny_root) -> None:
    def load(max_len: int):
        return load_user_sequences("tiny", str(tiny_root), [], "user_id", "item_id", "timestamp", max_len, False)

    wide, usual = load(100_000), load(50)
    assert wide.train.item_seq.shape == usual.train.item_seq.shape == (len(usual.train), 11)
    for a, b in ((wide.train, usual.train), (wide.test, usual.test)):
        assert torch.equal(a.item_seq, b.item_seq) and torch.equal(a.target, b.target)


def test_sparse_session_ids_are_remapped_not_allocated(tmp_path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "train_sessions.txt").write_text("1 1000000000000 3\n3 1000000000000\n")
    (folder / "test.tsv").write_text("1 3\t1000000000000\n")
    data = load_sessions("big", "session_text", str(tmp_path), [], 50, 0.0, 1)
    assert data.n_items == 4 and list(data.item_tokens) == ["[PAD]", "1", "3", "1000000000000"]
    assert data.test.target.tolist() == [3]
    (folder / "train_sessions.txt").write_text("1 2 3\n3 5\n")  # a prepared split keeps its ids
    (folder / "test.tsv").write_text("1 3\t2\n")
    assert load_sessions("big", "session_text", str(tmp_path), [], 50, 0.0, 1).n_items == 6


def test_a_row_of_tabs_is_an_error_not_dropped(tmp_path) -> None:
    path = write_inter(tmp_path / "t" / "t.inter", [("u1", "i1", 1.0), ("u1", "i2", 2.0)])
    with path.open("a") as fh:
        fh.write("\t\t\n")
    with pytest.raises(DataError, match=r"line 4: field 'user_id' is empty; expected a token"):
        read_atomic(path, {"user_id": "token", "item_id": "token", "timestamp": "float"})


def test_a_nul_byte_in_a_session_file_is_refused(tmp_path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "train_sessions.txt").write_bytes(b"1 2 3\n4\x005 6\n")
    (folder / "test.tsv").write_text("1 2\t3\n")
    with pytest.raises(DataError, match=r"train_sessions\.txt, line 2: contains a NUL byte"):
        load_sessions("s", "session_text", str(tmp_path), [], 50, 0.0, 1)


def test_a_fifo_as_a_data_file_is_refused_not_waited_on(tmp_path) -> None:
    (tmp_path / "f").mkdir()
    os.mkfifo(tmp_path / "f" / "f.inter")
    with no_hang(30), pytest.raises(DataError, match=r"f\.inter: is not a regular file \(a pipe, socket or device\)"):
        load_user_sequences("f", str(tmp_path), [], "user_id", "item_id", "timestamp", 50, download=False)
