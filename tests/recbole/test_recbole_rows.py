"""RecBole's exact rows and figures on RecBole's data (issue 35, point 6).

``tests/recbole/reference/recbole_ml100k_rows.json`` was written by RecBole 1.2.1 itself (``make recbole-rows``,
``bench/recbole/rows_reference.py``): the digest of its train, valid and test rows for ml-100k, and what it printed
for the shared checkpoint (every metric at K = 1, 5, 10, 20, 50). The digests depend on every row's history and
target; equal digests mean not one row differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from narm_lightning.data.protocol import Examples
from narm_lightning.data.sources import load_user_sequences
from narm_lightning.model.metrics import RankMetrics
from narm_lightning.model.narm import NARM
from narm_lightning.recbole.checkpoint import load_recbole_state_dict

REFERENCE = json.loads((Path(__file__).parent / "reference" / "recbole_ml100k_rows.json").read_text())


def _lines(examples: Examples, tokens) -> list[str]:
    return [f"{' '.join(tokens[s[:n]])}\t{tokens[t]}\n" for s, n, t in
            zip(examples.item_seq.numpy(), examples.item_seq_len.numpy(), examples.target.numpy(), strict=True)]


def _digests(data) -> dict[str, dict]:
    out = {}
    for name in ("train", "valid", "test"):
        lines = _lines(getattr(data, name), data.item_tokens)
        out[name] = {"rows": len(lines), "sha256": hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()}
    return out


def _ml100k(shared_data: Path, **kwargs):
    return load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50,
                               **kwargs)


def test_our_ml100k_rows_are_recboles_rows(shared_data) -> None:
    assert _digests(_ml100k(shared_data)) == REFERENCE["splits"]


def test_the_exact_time_order_is_kept_under_its_own_name_and_differs(shared_data) -> None:
    """time_order=exact orders 1-second-apart interactions by time where RecBole's float32 ties them: other
    rows (the counts stay), so the reference would catch a default that silently fell back to it."""
    exact = _digests(_ml100k(shared_data, time_order="exact"))
    assert {k: v["rows"] for k, v in exact.items()} == {k: v["rows"] for k, v in REFERENCE["splits"].items()}
    assert all(exact[k]["sha256"] != REFERENCE["splits"][k]["sha256"] for k in exact)
    # ml-100k without RecBole's min-max scaling (normalize_all false) ties far more: other rows again
    raw = _digests(_ml100k(shared_data, normalize_time=False))
    assert raw["train"]["sha256"] != REFERENCE["splits"]["train"]["sha256"]


@pytest.mark.parametrize("split", ["valid", "test"])
def test_every_metric_at_every_k_of_the_shared_checkpoint_is_recboles(shared_data, split) -> None:
    data = _ml100k(shared_data)
    model = NARM(data.n_items)
    model.load_state_dict(load_recbole_state_dict(shared_data / "recbole-checkpoint" / "NARM-ml-100k-seed2020.pth"))
    model.eval()
    counts = torch.bincount(data.train.target, minlength=data.n_items)  # RecBole's data.count_items
    reference = REFERENCE["checkpoint"]
    metric = RankMetrics(reference["topk"], reference["metrics"], item_popularity=counts)
    examples = getattr(data, split)
    with torch.no_grad():
        metric.update(model.predict(examples.item_seq, examples.item_seq_len), examples.target)
    got = {k: round(float(v), 4) for k, v in metric.compute().items()}
    assert len(got) == 55 and got == reference[split]
