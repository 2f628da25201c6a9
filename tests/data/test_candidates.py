"""Sampled evaluation (uniN / popN): RecBole's draw, the target ranked among its candidates only, candidates
fixed once (across epochs, training seeds and runs), saved, reused, refused when they do not fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from narm_lightning.config.validation import config_problems
from narm_lightning.data.candidates import FILE_NAME, Mode, draw, load, save, score_on_candidates
from narm_lightning.errors import DataError
from narm_lightning.model.metrics import RankMetrics
from narm_lightning.training.builders import load_data
from narm_lightning.training.run import train
from tests.helpers import SHARED_DATA, compose_train, need_shared, tiny_overrides

SHARED = SHARED_DATA
REFERENCE = Path(__file__).resolve().parents[2] / "bench" / "recbole" / "sampled_reference.json"


def test_the_target_ranks_among_its_candidates_only_by_hand() -> None:
    # 6 items (0 = padding). Row 0: target 1 (score .5); candidates 2 (.9) and 4 (.1): item 3 (.95) is not a
    # candidate, so the rank is 2 (full sort: 3). Row 1: target 5 (.3), candidates 2, 2 (a repeat counts once),
    # 3: item 2 (.8) and 3 (.6) beat it: rank 3.
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.95, 0.1, 0.2], [9.0, 0.7, 0.8, 0.6, 0.1, 0.3]])
    target = torch.tensor([1, 5])
    masked = score_on_candidates(scores, target, torch.tensor([[2, 4, 4], [2, 2, 3]]))
    assert masked[0, 0] == -math.inf and masked[0, 3] == -math.inf and masked[0, 2] == 0.9
    metric = RankMetrics([1, 2, 3], ["Hit", "MRR"])
    metric.update(masked, target)
    got = {k: round(float(v), 6) for k, v in metric.compute().items()}
    assert got == {"hit@1": 0.0, "mrr@1": 0.0, "hit@2": 0.5, "mrr@2": 0.25, "hit@3": 1.0,
                   "mrr@3": round((1 / 2 + 1 / 3) / 2, 6)}


def test_recboles_draw_never_the_target_nor_padding_uniform_or_by_popularity() -> None:
    target = torch.full((4000,), 3)
    counts = torch.tensor([0, 1, 2, 5, 0, 8])  # item 4 is nobody's target: never drawn by popularity
    uni = draw(target, Mode("uni10"), 6, counts, 1.0, torch.Generator().manual_seed(0))
    assert uni.shape == (4000, 10) and not uni.eq(3).any() and not uni.eq(0).any()
    share = torch.bincount(uni.flatten(), minlength=6)[[1, 2, 4, 5]] / uni.numel()
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.01)  # uniform over the other real items
    pop = draw(target, Mode("pop10"), 6, counts, 0.5, torch.Generator().manual_seed(0))
    share = torch.bincount(pop.flatten(), minlength=6).double() / pop.numel()
    expected = torch.tensor([0, 1, 2 ** 0.5, 0, 0, 8 ** 0.5], dtype=torch.float64)
    assert torch.allclose(share, expected / expected.sum(), atol=0.01)  # count ** alpha, target 3 redrawn
    assert Mode("pop100").n == 100 and Mode("uni7").distribution == "uniform" and not Mode("full").sampled


def test_bad_modes_and_combinations_are_refused_by_key() -> None:
    def problems(*overrides: str) -> str:
        return " ".join(config_problems(compose_train(["logger=none", *overrides])))

    assert problems("eval_args={mode:uni100}") == ""
    assert problems("eval_args={mode:{valid:full,test:pop50}}", "extra_test_modes=[full,uni10]") == ""
    assert "eval_args.mode is 'labeled'" in problems("eval_args={mode:labeled}")
    assert "eval_args.mode is {'valid': 'uni100'}" in problems("eval_args={mode:{valid:uni100}}")
    assert "uni0" in problems("eval_args={mode:uni0}")
    assert "sampled candidates need the leave-one-out split" in problems("eval_args={split:{RS:[8,1,1]},mode:uni100}")
    assert "extra_test_modes" in problems("extra_test_modes=[uni100,uni100]")
    assert "data.eval_candidates is 'x.npz' but no split is scored on sampled" in problems("data.eval_candidates=x.npz")


def _run(root: Path, out: Path, *extra: str) -> dict:
    return train(compose_train(tiny_overrides(root, "epochs=2", "eval_args={mode:uni5}",
                                              "extra_test_modes=[full,pop5]", *extra)), output_dir=out)


def test_candidates_are_drawn_once_saved_and_the_same_for_every_training_seed(tiny_root, tmp_path) -> None:
    a = _run(tiny_root, tmp_path / "a", "seed=1")
    b = _run(tiny_root, tmp_path / "b", "seed=2")
    c = _run(tiny_root, tmp_path / "c", "seed=1", "data.eval_candidates_seed=7")
    sha = [r["protocol"]["candidates"]["sha256"] for r in (a, b, c)]
    assert set(sha[0]) == {"valid.uni5", "test.uni5", "test.pop5"}
    assert sha[0] == sha[1] and sha[0]["test.uni5"] != sha[2]["test.uni5"]
    assert a["protocol"]["mode"] == "uni5" and a["protocol"]["extra_test_modes"] == ["full", "pop5"]
    assert set(a["extra_tests"]) == {"full", "pop5"} and set(a["extra_tests"]["full"]) == set(a["test"])
    # ranking among 6 can only help the target: sampled metrics are at least the full-sort ones, row by row
    assert a["test"]["recall@10"] == 1.0 and a["extra_tests"]["full"]["recall@10"] <= 1.0
    saved = tmp_path / "a" / FILE_NAME
    with np.load(saved, allow_pickle=False) as npz:
        assert json.loads(str(npz["meta"]))["seed"] == 2020 and npz["test.uni5"].shape == (40, 5)
    # the saved file scores a run exactly as the drawn one did
    d = _run(tiny_root, tmp_path / "d", "seed=1", f"data.eval_candidates={saved}")
    assert d["protocol"]["candidates"]["sha256"] == sha[0] and d["test"] == a["test"]
    assert d["extra_tests"] == a["extra_tests"]


def test_a_candidates_file_that_does_not_fit_is_refused_before_training(tiny_root, tmp_path) -> None:
    _run(tiny_root, tmp_path / "a")
    saved = tmp_path / "a" / FILE_NAME

    def refused(path: Path, *extra: str) -> str:
        with pytest.raises(DataError) as err:
            _run(tiny_root, tmp_path / f"r{len(list(tmp_path.iterdir()))}", f"data.eval_candidates={path}", *extra)
        return str(err.value)

    assert "was drawn for other examples" in refused(saved, "data.max_item_list_length=3")
    assert "holds no candidates for valid.uni9" in refused(saved, "eval_args={mode:uni9}")
    assert "no such file" in refused(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    assert "not an .npz archive" in refused(tmp_path / "text.npz")
    with np.load(saved, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    pickled = tmp_path / "pickled.npz"  # an object array needs pickle: never read
    np.savez(pickled, **{**members, "test.uni5": np.array([object()] * 40, dtype=object)})
    assert "cannot be read as candidates" in refused(pickled)
    own = members["test.uni5"].copy()
    tiny_targets = load_data(compose_train(tiny_overrides(tiny_root))).test.target.numpy()
    own[0, 0] = tiny_targets[0]
    np.savez(tmp_path / "own.npz", **{**members, "test.uni5": own})
    assert "include its own target" in refused(tmp_path / "own.npz")
    np.savez(tmp_path / "shape.npz", **{**members, "test.uni5": own[:, :4]})
    assert "shape (40, 5)" in refused(tmp_path / "shape.npz")
    np.savez(tmp_path / "big.npz", **{**members, "test.uni5": np.ones((40, 5000), dtype=np.int64)})
    assert "more than 40 rows of candidates can take" in refused(tmp_path / "big.npz")


def test_save_and_load_round_trip(tmp_path) -> None:
    target = torch.tensor([1, 2, 3])
    cand = torch.tensor([[2, 3], [1, 1], [4, 1]])
    save(tmp_path / "c.npz", {"test.uni2": cand}, {"examples_sha256": "abc"})
    assert torch.equal(load(tmp_path / "c.npz", {"test.uni2": target}, 5, "abc")["test.uni2"], cand)
    with pytest.raises(DataError, match="outside 1..3"):
        load(tmp_path / "c.npz", {"test.uni2": target}, 4, "abc")


def test_uni100_and_pop100_agree_with_recbole_within_sampling_noise() -> None:
    """The shared RecBole checkpoint on ml-100k: the mean over as many candidate seeds of ours as RecBole's own
    draws in ``make recbole-sampled``'s file, per mode, split and metric, within 4 standard errors
    of their difference. A different distribution (the target among the draws, the padding id, popularity
    counted on another set) moves these means by many standard errors."""
    from narm_lightning.data.candidates import prepare
    from narm_lightning.training.builders import build_module, load_data, load_initial_weights

    need_shared(SHARED / "recbole-checkpoint")
    reference = json.loads(REFERENCE.read_text())  # committed: RecBole's own draws (make recbole-sampled)
    cfg = compose_train(["logger=none", f"data.extra_roots=[{SHARED}]", "data.download=false"])
    data = load_data(cfg)
    module = build_module(cfg, data.n_items)
    load_initial_weights(module, str(SHARED / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth"))
    module.model.eval()
    with torch.no_grad():
        scores = {s: module.model.predict(e.item_seq, e.item_seq_len) for s, e in
                  (("valid", data.valid), ("test", data.test))}
    targets = {"valid": data.valid.target, "test": data.test.target}
    seeds = reference["seeds"]
    for mode, runs in reference["modes"].items():
        ours: dict[str, list[dict[str, float]]] = {"valid": [], "test": []}
        for seed in seeds:
            drawn = prepare({"valid": [Mode(mode)], "test": [Mode(mode)]}, data, "x", seed, 1.0, None)
            for split in ours:
                metric = RankMetrics([10], ["Recall", "MRR", "NDCG"])
                metric.update(score_on_candidates(scores[split], targets[split], drawn[f"{split}.{mode}"]),
                              targets[split])
                ours[split].append({k: float(v) for k, v in metric.compute().items()})
        for split in ("valid", "test"):
            for name in ("recall@10", "mrr@10", "ndcg@10"):
                mine = np.array([r[name] for r in ours[split]])
                theirs = np.array([r[split][name] for r in runs])
                se = math.sqrt(mine.var(ddof=1) / len(mine) + theirs.var(ddof=1) / len(theirs))
                assert abs(mine.mean() - theirs.mean()) <= 4 * se + 5e-5, (mode, split, name, mine.mean(),
                                                                          theirs.mean(), se)


def test_a_recbole_config_file_with_a_sampled_mode_scores_the_checkpoint_on_fixed_candidates(tmp_path) -> None:
    """RecBole's own names in a config file (``eval_args.mode: {valid: uni100, test: pop100}``) on its
    checkpoint: sampled figures within the spread of RecBole's draws, the full sort beside them equal to what
    RecBole printed, and the card naming the modes and the candidates."""
    need_shared(SHARED / "recbole-checkpoint")
    reference = json.loads(REFERENCE.read_text())  # committed beside the bench scripts: never skipped
    recbole_yaml = tmp_path / "recbole.yaml"
    recbole_yaml.write_text("eval_args: {split: {LS: valid_and_test}, order: TO, mode: {valid: uni100, test: pop100}}"
                            "\nmetrics: [MRR, NDCG]\ntopk: [10]\n")
    cfg = compose_train([f"init_from={SHARED / 'recbole-checkpoint' / 'NARM-ml-100k-seed2020.pth'}", "epochs=0",
                         "logger=none", "trainer.enable_progress_bar=false", f"data.extra_roots=[{SHARED}]",
                         f"data.root={tmp_path / 'none'}", f"config_file={recbole_yaml}", "extra_test_modes=[full]"])
    results = train(cfg, output_dir=tmp_path / "run")
    assert results["protocol"]["mode"] == {"valid": "uni100", "test": "pop100"}
    assert set(results["protocol"]["candidates"]["sha256"]) == {"valid.uni100", "test.pop100"}
    assert round(results["extra_tests"]["full"]["mrr@10"], 4) == 0.0351  # RecBole's printed full-sort test figure
    for split, mode, got in (("valid", "uni100", results["best_valid"]), ("test", "pop100", results["test"])):
        theirs = np.array([r[split]["mrr@10"] for r in reference["modes"][mode]])
        assert abs(got["mrr@10"] - theirs.mean()) < 4 * theirs.std(ddof=1) + 1e-4, (split, got, theirs.mean())
