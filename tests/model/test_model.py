from __future__ import annotations

import torch

from narm_lightning.model.narm import NARM


def test_parameter_count_matches_recbole_defaults_on_ml100k() -> None:
    model = NARM(n_items=1683)
    assert sum(p.numel() for p in model.parameters()) == 230_720
    names = {name for name, _ in model.named_parameters()}
    assert names == {"item_embedding.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "a_1.weight",
                     "a_2.weight", "v_t.weight", "b.weight"}


def test_padding_does_not_change_a_rows_scores() -> None:
    torch.manual_seed(0)
    model = NARM(n_items=50, embedding_size=8, hidden_size=12, n_layers=2).eval()
    seq = torch.tensor([[3, 7, 9, 0, 0], [4, 0, 0, 0, 0]])
    length = torch.tensor([3, 1])
    wide = torch.cat([seq, torch.zeros(2, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        trimmed = model.predict(seq[:, :3], length)
        padded = model.predict(wide, length)
        alone = model.predict(seq[1:, :1], length[1:])
    torch.testing.assert_close(trimmed, padded, rtol=0, atol=1e-6)
    torch.testing.assert_close(trimmed[1:], alone, rtol=0, atol=1e-6)
    # padding must be 0: as in RecBole, attention masks by item_seq > 0, not by length, so a non-zero entry
    # after a row's length is attended (the GRU's state is still read at the length)
    dirty = wide.clone()
    dirty[0, 3:6] = torch.tensor([11, 12, 13])
    with torch.no_grad():
        attended = model.predict(dirty, length)
    assert not torch.allclose(attended[0], padded[0], atol=1e-4)
    torch.testing.assert_close(attended[1], padded[1], rtol=0, atol=1e-6)


def test_predict_never_ranks_padding_and_padding_row_is_zero() -> None:
    model = NARM(n_items=20).eval()
    scores = model.predict(torch.tensor([[1, 2]]), torch.tensor([2]))
    assert scores[0, 0] == float("-inf")
    assert torch.isfinite(scores[0, 1:]).all()


def test_init_is_xavier_normal_for_linear_and_embedding() -> None:
    torch.manual_seed(0)
    model = NARM(n_items=4000, embedding_size=64)
    std = model.item_embedding.weight.std().item()
    expected = (2.0 / (4000 + 64)) ** 0.5
    assert abs(std - expected) / expected < 0.05
    # the GRU keeps PyTorch's uniform(-1/sqrt(H), 1/sqrt(H)) init
    bound = 1 / model.hidden_size**0.5
    assert model.gru.weight_hh_l0.abs().max().item() <= bound + 1e-6
