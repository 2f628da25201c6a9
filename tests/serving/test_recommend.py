"""Serving: the Recommender API, the streaming CLI, and the TorchScript/ONNX exports, on one tiny trained model."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from narm_lightning.errors import ConfigError, DataError
from narm_lightning.serving import export as export_module
from narm_lightning.serving.cli import compose_config, main, recommend_command
from narm_lightning.serving.export import export
from narm_lightning.serving.recommender import Recommender
from narm_lightning.training.builders import build_module
from narm_lightning.training.run import train
from tests.conftest import write_inter
from tests.helpers import compose_train, tiny_overrides
from tests.system.test_fuzz_readers import no_hang

REPO = Path(__file__).resolve().parents[2]
MAX_LEN = 8  # shorter than the tiny users' 12 items, so truncation is exercised


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One tiny model for the whole session: 40 users on a cycle over 30 items (next = current + 1)."""
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{(start + t) % 30}", float(t))
            for u, start in enumerate(rng.integers(0, 30, size=40)) for t in range(12)]
    write_inter(root / "tiny" / "tiny.inter", rows)
    cfg = compose_train(tiny_overrides(root, "epochs=12", "learning_rate=0.01", "stopping_step=20",
                                       f"data.max_item_list_length={MAX_LEN}"))
    results = train(cfg, output_dir=root / "run")
    return Path(results["best_checkpoint"]), cfg


@pytest.fixture(scope="session")
def rec(trained) -> Recommender:
    return Recommender.from_checkpoint(trained[0])


SESSIONS = [["i3", "i4"], ["i10"], ["i20", "i21", "i22", "i23", "i24"], [f"i{i}" for i in range(12)]]



def assert_same_recommendations(expected: Recommender, got: Recommender, batch_sizes: tuple[int, ...],
                                rel: float, abs_: float) -> None:
    """Same top-10 items (and scores within tolerance) for SESSIONS, with and without exclude_seen."""
    for batch_size in batch_sizes:
        for exclude_seen in (False, True):
            a = expected.recommend(SESSIONS, k=10, batch_size=batch_size, exclude_seen=exclude_seen)
            b = got.recommend(SESSIONS, k=10, batch_size=batch_size, exclude_seen=exclude_seen)
            assert [r.items for r in a] == [r.items for r in b]
            for ra, rb in zip(a, b):
                assert ra.scores == pytest.approx(rb.scores, rel=rel, abs=abs_)

def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m narm_lightning.recommend`` of this checkout, from any folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "narm_lightning.recommend", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_api_top_k_in_original_ids(rec: Recommender) -> None:
    out = rec.recommend(SESSIONS, k=5)
    assert len(out) == len(SESSIONS)
    tokens = set(rec.item_tokens[1:])
    for r in out:
        assert len(r.items) == 5 and len(set(r.items)) == 5 and set(r.items) <= tokens
        assert "[PAD]" not in r.items and r.unknown == []
        assert r.scores == sorted(r.scores, reverse=True)
    # the cycle is learnt: the next item ranks in the top 5 for most sessions
    hits = sum(f"i{(int(s[-1][1:]) + 1) % 30}" in r.items for s, r in zip(SESSIONS, out))
    assert hits >= 3
    # k above the catalogue returns every real item once
    assert sorted(rec.recommend([["i1"]], k=1000)[0].items) == sorted(tokens)


def test_window_and_hparams(rec: Recommender, trained) -> None:
    assert rec.max_len == MAX_LEN
    ckpt = torch.load(trained[0], weights_only=True)
    assert ckpt["hyper_parameters"]["data"] == {"max_item_list_length": MAX_LEN}
    long = [f"i{i}" for i in range(12)]
    assert rec.recommend([long], k=10) == rec.recommend([long[-MAX_LEN:]], k=10)


def test_exclude_seen(rec: Recommender) -> None:
    session = [f"i{i}" for i in range(5)]
    plain = rec.recommend([session], k=29)[0]
    assert set(plain.items) & set(session)  # seen items are ranked unless excluded
    excluded = rec.recommend([session], k=29, exclude_seen=True)[0]
    assert not set(excluded.items) & set(session)
    assert len(excluded.items) == 30 - len(session)  # only 25 unseen items exist, no -inf filler


def _training_target_counts() -> dict[str, int]:
    """Each item's count as a training target, from the fixture's own rows (leave-one-out: of each user's 12
    items, the 2nd to the 10th are training targets; the 11th validates, the 12th tests)."""
    from collections import Counter

    starts = np.random.default_rng(0).integers(0, 30, size=40)
    return Counter(f"i{(s + t) % 30}" for s in starts for t in range(1, 10))


def test_a_session_with_no_known_item_gets_the_most_popular_training_items(rec: Recommender, trained,
                                                                           tmp_path: Path) -> None:
    counts = _training_target_counts()
    for session in ([], ["ghost", "nope"]):
        (got,) = rec.recommend([session], k=5)
        assert got.source == "popular" and got.unknown == session
        assert got.scores == [float(counts[i]) for i in got.items]
        assert got.scores == sorted(got.scores, reverse=True) and len(set(got.items)) == 5
        assert min(got.scores) >= sorted(counts.values(), reverse=True)[4]  # no more popular item left out
    # a checkpoint from before the counts: no items, and the command says why; damaged counts are refused
    ckpt = torch.load(trained[0], weights_only=True)
    del ckpt["item_popularity"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    (none,) = Recommender.from_checkpoint(old).recommend([["ghost"]], k=5)
    assert (none.items, none.source) == ([], "model")
    proc = run_cli(f"ckpt={old}", "sessions=['ghost','i3 i4']", "k=3")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 sessions had no item the model knows and got no items" in proc.stderr
    for bad in ([1, 2], ["1"] * 31, [-1] * 31, [True] * 31):
        ckpt["item_popularity"] = bad
        torch.save(ckpt, old)
        with pytest.raises(DataError, match="item_popularity is not 31 non-negative integers"):
            Recommender.from_checkpoint(old)


def test_unknown_ids_are_reported(rec: Recommender) -> None:
    mixed, alone, known = rec.recommend([["i1", "nope", "i2", 99], ["x", "y"], ["i1", "i2"]], k=5)
    assert mixed.unknown == ["nope", "99"]
    assert (mixed.items, mixed.scores) == (known.items, known.scores)
    assert alone.unknown == ["x", "y"] and (mixed.source, alone.source) == ("model", "popular")
    with pytest.raises(DataError, match="nope"):
        rec.recommend([["i1", "nope"]], strict=True)
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="k must be"):
            rec.recommend([["i1"]], k=bad)


def test_scores_equal_lightning_module_predict(rec: Recommender, trained) -> None:
    ckpt_path, cfg = trained
    ckpt = torch.load(ckpt_path, weights_only=True)
    module = build_module(cfg, ckpt["hyper_parameters"]["model"]["n_items"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    sessions = SESSIONS[:3]
    ids = [[rec.index[t] for t in s] for s in sessions]
    seq = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for row, s in enumerate(ids):
        seq[row, : len(s)] = torch.tensor(s)
    with torch.no_grad():
        scores = module.model.predict(seq, torch.tensor([len(s) for s in ids]))
    top_scores, top_ids = scores.topk(7, dim=1)
    for r, s_row, i_row in zip(rec.recommend(sessions, k=7), top_scores.tolist(), top_ids.tolist()):
        assert r.items == [rec.item_tokens[i] for i in i_row]
        assert r.scores == pytest.approx(s_row, rel=1e-6, abs=1e-6)


def test_torchscript_export_matches_checkpoint(rec: Recommender, trained, tmp_path: Path) -> None:
    out = export(trained[0], tmp_path / "export")
    assert json.loads((out / "item_ids.json").read_text()) == rec.item_tokens
    meta = json.loads((out / "meta.json").read_text())
    assert meta["max_item_list_length"] == MAX_LEN and meta["n_items"] == rec.n_items == 31
    exported = Recommender.from_export(out)
    assert isinstance(exported.scorer, torch.jit.ScriptModule)
    assert_same_recommendations(rec, exported, batch_sizes=(1, 3), rel=1e-6, abs_=1e-6)
    # the folder's model.ts is code for other runtimes: serving rebuilds the model and never loads it
    (out / "model.ts").write_bytes(b"not torchscript at all")
    assert_same_recommendations(rec, Recommender.from_export(out), batch_sizes=(3,), rel=1e-6, abs_=1e-6)
    export(trained[0], out)
    # the scripted module itself takes any batch size and length (nothing baked in by tracing)
    scripted = torch.jit.load(str(out / "model.ts"))
    for seq, lengths in ((torch.tensor([[5]]), torch.tensor([1])),
                         (torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]]), torch.tensor([3, 6]))):
        got = scripted(seq, lengths)
        assert got.shape == (len(lengths), 31) and torch.isinf(got[:, 0]).all()
        assert torch.allclose(got, rec.scorer(seq, lengths))


HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def onnx_scorer(path: Path):
    """``model.onnx`` under onnxruntime as a ``Recommender`` scorer (torch tensors in and out)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def score(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        feed = {"item_seq": item_seq.numpy(), "item_seq_len": item_seq_len.numpy()}
        return torch.from_numpy(session.run(["scores"], feed)[0])

    return score


@pytest.mark.skipif(not HAS_ONNX, reason="needs onnx, onnxscript and onnxruntime: pip install -e '.[onnx]'")
def test_onnx_export_matches_checkpoint(rec: Recommender, trained, tmp_path: Path) -> None:
    out = tmp_path / "export"
    for _ in range(2):  # the second export in one process must keep the length free too (GRU cache workaround)
        export(trained[0], out, formats=["torchscript", "onnx"])
    assert sorted(p.name for p in out.iterdir()) == ["item_ids.json", "meta.json", "model.onnx", "model.ts",
                                                          "weights.pt"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["formats"] == ["torchscript", "onnx"] and meta["onnx"]["scores_checked_with_onnxruntime"] is True
    item_ids = json.loads((out / "item_ids.json").read_text())
    assert item_ids == rec.item_tokens
    # the raw model: sessions of different lengths in one padded batch, and batches of one
    score = onnx_scorer(out / "model.onnx")
    ids = [rec.encode(s)[0] for s in SESSIONS]
    seq = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for row, s in enumerate(ids):
        seq[row, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in ids])
    assert len(set(lengths.tolist())) == 4
    for s, ln in ((seq, lengths), (seq[1:2, :1], lengths[1:2]), (seq[3:4], lengths[3:4]), (seq[2:3], lengths[2:3])):
        got, want = score(s, ln), rec.scorer(s, ln)
        assert got.shape == want.shape == (len(ln), 31) and torch.isinf(got[:, 0]).all()
        torch.testing.assert_close(got[:, 1:], want[:, 1:], rtol=0, atol=1e-5)
        assert torch.equal(got.topk(10).indices, want.topk(10).indices)
    # through the checkpoint's ranking code: the same top-K in original ids
    served = Recommender(score, item_ids, meta["max_item_list_length"])
    assert_same_recommendations(rec, served, batch_sizes=(1, 4), rel=0, abs_=1e-5)


def test_onnx_without_the_packages_names_them(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "_missing_onnx_packages", lambda: ["onnx", "onnxscript"])
    with pytest.raises(ConfigError, match="needs the `onnx`, `onnxscript` package"):
        export(trained[0], tmp_path / "export", formats=["torchscript", "onnx"])
    assert not (tmp_path / "export").exists()  # checked before anything is written


def test_onnx_exporter_failure_is_one_paragraph(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("exporter says no\n  Traceback-like detail")

    monkeypatch.setattr(export_module, "_missing_onnx_packages", lambda: [])
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ConfigError) as info:
        export(trained[0], tmp_path / "export", formats=["torchscript", "onnx"])
    message = str(info.value)
    assert "ONNX export of the scoring model failed (RuntimeError: exporter says no)" in message
    assert "\n" not in message and "formats=[torchscript]" in message
    assert not (tmp_path / "export").exists()  # both conversions run before anything is written


def test_cli_streams_a_file_atomically(rec: Recommender, trained, tmp_path: Path) -> None:
    lines = ["i1 i2", "i5", "i7 nope i8", "", "ghost", "i10 i11 i12", "i29", "i0 i1", "i3", "i4 i5 i6 i7"]
    src = tmp_path / "sessions.txt"
    src.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "out" / "recs.tsv"
    proc = run_cli(f"ckpt={trained[0]}", f"input={src}", f"output={dst}", "k=4", "batch_size=3", "exclude_seen=true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "2 of 10 sessions had item ids not in the training data" in proc.stderr and "nope" in proc.stderr
    assert [p.name for p in dst.parent.iterdir()] == ["recs.tsv"]  # no temp file left
    rows = [r.split("\t") for r in dst.read_text().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    expected = rec.recommend([line.split() for line in lines], k=4, exclude_seen=True)
    for row, want in zip(rows, expected):
        assert row[1].split() == want.items and row[3].split() == want.unknown
        assert [float(s) for s in row[2].split()] == pytest.approx(want.scores, rel=1e-5, abs=1e-5)
    assert [r[4] for r in rows] == ["model"] * 3 + ["popular"] * 2 + ["model"] * 5
    assert rows[3][3] == "" and rows[4][3] == "ghost" and rows[3][1] == rows[4][1] != ""
    assert "2 of 10 sessions had no item the model knows; they are answered with the most popular" in proc.stderr


def test_cli_inline_jsonl_and_export_dir(rec: Recommender, trained, tmp_path: Path) -> None:
    main(["export", f"ckpt={trained[0]}", f"dir={tmp_path / 'exp'}"])
    for source in (f"ckpt={trained[0]}", f"export_dir={tmp_path / 'exp'}"):
        buf = io.StringIO()
        cfg = compose_config("recommend", [source, "sessions=['i3 i4',i10,'ghost']", "format=jsonl", "k=3"])
        assert recommend_command(cfg, stdout=buf, stderr=io.StringIO()) == 3
        got = [json.loads(line) for line in buf.getvalue().splitlines()]
        want = rec.recommend([["i3", "i4"], ["i10"], ["ghost"]], k=3)
        assert [g["items"] for g in got] == [w.items for w in want] and [g["line"] for g in got] == [1, 2, 3]
        assert [g["source"] for g in got] == ["model", "model", "popular"]  # the export keeps the counts


def test_failed_stream_leaves_no_output(trained, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("i1\ni2\ni3\ni4\nnope\n")
    dst = tmp_path / "recs.tsv"
    cfg = compose_config("recommend", [f"ckpt={trained[0]}", f"input={src}", f"output={dst}", "strict=true",
                                       "batch_size=2"])
    with pytest.raises(DataError, match="nope"):
        recommend_command(cfg, stderr=io.StringIO())
    assert list(tmp_path.iterdir()) == [src]
    src.write_text("")
    with pytest.raises(DataError, match="empty"):
        recommend_command(compose_config("recommend", [f"ckpt={trained[0]}", f"input={src}"]))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable narm-lightning checkpoint"):
        Recommender.from_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(DataError, match="not a narm-lightning checkpoint"):
        Recommender.from_checkpoint(tmp_path / "other.ckpt")


@pytest.mark.parametrize("args, message", [
    (["ckpt=/nonexistent/best.ckpt", "sessions=[i1]"], "does not exist"),
    (["k=0", "sessions=[i1]"], "k is 0; expected a positive integer"),
    (["sessions=[242,302]"], "sessions holds bare numbers (242, 302); expected each session as a string"),
    (["sessions=[i1]", "exclude_sen=true"], "exclude_sen is not a key of this config (did you mean exclude_seen?)"),
    (["export", "ckpt=/nonexistent/best.ckpt", "dir=x"], "does not exist"),
])
def test_cli_errors_are_one_paragraph_exit_2(args: list[str], message: str, trained, tmp_path: Path) -> None:
    if "k=0" in args:
        args.append(f"ckpt={trained[0]}")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no log file


@pytest.mark.parametrize(("key", "value"), [("hidden_size", 10**9), ("embedding_size", 10**9), ("n_items", 10**9),
                                            ("n_layers", 7)])
def test_a_checkpoint_whose_config_lies_about_its_sizes_is_refused_before_allocating(trained, tmp_path, key,
                                                                                       value) -> None:
    """The red-team's weights-only checkpoint claiming a 10^9 size: the model used to be built first (GiBs, or
    minutes); now its shapes are compared with the weights' on the meta device and the file is refused."""
    ckpt = torch.load(trained[0], weights_only=True)
    ckpt["hyper_parameters"]["model"][key] = value
    lying = tmp_path / "lying.ckpt"
    torch.save(ckpt, lying)
    with no_hang(60), pytest.raises(DataError, match=r"lying\.ckpt: its hyper_parameters do not describe its "
                                                    r"weights \((ValueError: the model config and the weights "
                                                    r"disagree|RuntimeError: Storage size calculation overflowed)"):
        Recommender.from_checkpoint(lying)


def test_an_export_with_fewer_item_ids_than_items_is_refused(trained, tmp_path: Path) -> None:
    """item_ids.json shorter than the model's item table ended in an IndexError while ranking."""
    out = export(trained[0], tmp_path / "export")
    ids = json.loads((out / "item_ids.json").read_text())
    (out / "item_ids.json").write_text(json.dumps(ids[:-1]))
    with pytest.raises(DataError, match=r"item_ids\.json: 30 item ids for a model of 31 items \(padding included\)"):
        Recommender.from_export(out)


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_input_from_standard_input(rec: Recommender, trained, name: str) -> None:
    """``... | narm-recommend input=-``: a pipe is no regular file; it was refused as "does not exist"."""
    proc = subprocess.run([sys.executable, "-m", "narm_lightning.serving", f"ckpt={trained[0]}", f"input={name}",
                           "k=3"], input="i3 i4\ni10\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = rec.recommend([["i3", "i4"], ["i10"]], k=3)
    assert [line.split("\t")[1].split() for line in proc.stdout.splitlines()] == [r.items for r in expected]
