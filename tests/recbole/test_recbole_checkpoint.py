from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from narm_lightning.data.sources import load_user_sequences
from narm_lightning.errors import DataError
from narm_lightning.model.metrics import RankMetrics, target_ranks, target_ranks_of_product
from narm_lightning.model.narm import NARM
from narm_lightning.recbole.checkpoint import load_recbole_state_dict
from tests.helpers import autograd_node_names

# What RecBole 1.2.1 printed for this checkpoint (PROVENANCE.md), rounded to 4 decimals.
PRINTED = {
    "valid": {"recall@10": 0.1379, "mrr@10": 0.0477, "ndcg@10": 0.0684, "hit@10": 0.1379, "precision@10": 0.0138},
    "test": {"recall@10": 0.1220, "mrr@10": 0.0351, "ndcg@10": 0.0552, "hit@10": 0.1220, "precision@10": 0.0122},
}


def test_recbole_weights_reproduce_recboles_printed_metrics(shared_data) -> None:
    state = load_recbole_state_dict(shared_data / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth")
    data = load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50)
    model = NARM(data.n_items)
    model.load_state_dict(state)
    model.eval()
    for split, examples in (("valid", data.valid), ("test", data.test)):
        metric, by_product = RankMetrics([10]), RankMetrics([10])
        with torch.no_grad():  # the scores, and the ranks evaluation computes without them (module._rank)
            scores = model.predict(examples.item_seq, examples.item_seq_len)
            ranks = target_ranks_of_product(model(examples.item_seq, examples.item_seq_len),
                                            model.item_embedding.weight, examples.target)
        assert torch.equal(ranks, target_ranks(scores, examples.target)), split
        metric.update(scores, examples.target)
        by_product.update(None, examples.target, ranks=ranks)
        for m in (metric, by_product):
            got = {k: round(float(v), 4) for k, v in m.compute().items()}
            assert got == PRINTED[split], split


def test_recbole_weights_reproduce_recboles_printed_metrics_through_the_fused_gru(shared_data) -> None:
    """The fused GRU's recurrence (the training path: compiled step kernels, hand-derived backward; forced here by
    scoring with gradients on, in fp32) gives RecBole's printed metrics too, not only nn.GRU's forward."""
    state = load_recbole_state_dict(shared_data / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth")
    data = load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50)
    model = NARM(data.n_items, gru_impl="fused")
    model.load_state_dict(state)
    model.eval()  # dropout off; the GRU still takes its training path while gradients are on
    for split, examples in (("valid", data.valid), ("test", data.test)):
        metric = RankMetrics([10])
        with torch.enable_grad():
            scores = model.predict(examples.item_seq, examples.item_seq_len)
        assert "_GRULayerBackward" in autograd_node_names(scores)  # the fused layer ran
        metric.update(scores.detach(), examples.target)
        got = {k: round(float(v), 4) for k, v in metric.compute().items()}
        assert got == PRINTED[split], split


def recbole_list_metrics(items: np.ndarray, popularity: np.ndarray, num_items: int) -> dict[str, float]:
    """RecBole 1.2.1's beyond-accuracy definitions (recbole/evaluator/metrics.py), computed the direct way
    from every row's top-K list at once, to check the summed states of ``RankMetrics`` on real data."""
    counts = np.array(sorted(Counter(items.flatten().tolist()).values()), dtype=np.float64)
    total = items.size
    seen = [i for i in range(num_items) if popularity[i] > 0]
    tail = set(sorted(seen, key=lambda i: (popularity[i], i))[: max(int(len(seen) * 0.1), 1)])
    positions = np.arange(num_items - len(counts) + 1, num_items + 1)
    p = counts / total
    return {
        "itemcoverage": len(counts) / num_items,
        "averagepopularity": float(popularity[items].mean()),
        "giniindex": float(np.sum((2 * positions - num_items - 1) * counts) / total / num_items),
        "shannonentropy": float(-(p * np.log(p)).sum() / len(counts)),
        "tailpercentage": float(np.isin(items, list(tail)).mean()),
    }


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_objects_are_never_executed(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "config": _Boom()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(DataError, match=r"builtins\.exec, which a torch checkpoint \(a RecBole saved/NARM-\*\.pth\) "
                                        "never holds; refused"):
        load_recbole_state_dict(path)
    assert not (tmp_path / "PWNED").exists()


def test_not_a_checkpoint(tmp_path) -> None:
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable torch checkpoint"):
        load_recbole_state_dict(bad)
    with pytest.raises(DataError, match="not found"):
        load_recbole_state_dict(tmp_path / "missing.pth")


def test_train_py_evaluates_a_recbole_checkpoint_with_epochs_0(shared_data, tmp_path) -> None:
    from narm_lightning.training.run import train
    from tests.helpers import compose_train

    pth = shared_data / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth"
    recbole_yaml = tmp_path / "recbole.yaml"  # all eleven of RecBole's top-K metrics, three cut-offs
    recbole_yaml.write_text(
        "metrics: [Recall, MRR, NDCG, Hit, Precision, MAP, ItemCoverage, AveragePopularity, GiniIndex, "
        "ShannonEntropy, TailPercentage]\ntopk: [5, 10, 20]\nvalid_metric: MRR@10\n"
        "eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}\nmetric_decimal_place: 4\n")
    cfg = compose_train([f"init_from={pth}", "epochs=0", "logger=none", "trainer.enable_progress_bar=false",
                         f"data.extra_roots=[{shared_data}]", f"data.root={tmp_path / 'none'}",
                         f"config_file={recbole_yaml}"])
    results = train(cfg, output_dir=tmp_path / "run")
    for split, got in (("valid", results["best_valid"]), ("test", results["test"])):
        assert {k: round(got[k], 4) for k in PRINTED[split]} == PRINTED[split]
        assert len(got) == 11 * 3 and got["map@10"] == got["mrr@10"]  # one target: AP is the reciprocal rank
    data = load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50)
    model = NARM(data.n_items)
    model.load_state_dict(load_recbole_state_dict(pth))
    model.eval()
    with torch.no_grad():
        top = model.predict(data.test.item_seq, data.test.item_seq_len).topk(20, dim=1).indices.numpy()
    popularity = np.bincount(data.train.target.numpy(), minlength=data.n_items)
    for k in (5, 10, 20):
        for name, value in recbole_list_metrics(top[:, :k], popularity, data.n_items).items():
            assert results["test"][f"{name}@{k}"] == pytest.approx(value, rel=1e-9), (name, k)
    # the run keeps the weights as a narm-lightning checkpoint, loadable the safe way
    ckpt = torch.load(results["best_checkpoint"], weights_only=True)
    assert torch.equal(ckpt["state_dict"]["model.item_embedding.weight"],
                       load_recbole_state_dict(pth)["item_embedding.weight"])
