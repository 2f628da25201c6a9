"""The fused GRU (``model.gru_impl``) against ``nn.GRU``: outputs, every gradient, state dicts, the switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from narm_lightning.gru import FusedGRU
from narm_lightning.model import NARM

# (batch, steps, input, hidden, layers); steps 1 and a batch of 1 are the edge cases
SHAPES = [(3, 7, 6, 5, 1), (2, 1, 4, 3, 1), (1, 9, 5, 4, 2), (17, 13, 8, 16, 3)]


def _pair(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[nn.GRU, FusedGRU, torch.Tensor]:
    batch, steps, inputs, hidden, layers = shape
    torch.manual_seed(sum(shape))
    reference = nn.GRU(inputs, hidden, layers, bias=False, batch_first=True).to(dtype)
    fused = FusedGRU(inputs, hidden, layers).to(dtype)
    fused.load_state_dict(reference.state_dict())  # same names, same shapes
    return reference, fused, torch.randn(batch, steps, inputs, dtype=dtype)


def _grads(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, autocast: bool = False) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    module.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, last = module(x)
    ((out.float() * grad).sum() + last.float().sum()).backward()  # h_n's gradient flows too
    return [out.detach().float(), last.detach().float(), x.grad.float(),
            *(p.grad.float() for p in module.parameters())]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_outputs_and_every_gradient_equal_nn_gru(shape, dtype, tol) -> None:
    """fp64 to rounding (1e-12), fp32 within 2e-5 absolute: the same math, in another order of summation."""
    reference, fused, x = _pair(shape, dtype)
    grad = torch.randn(shape[0], shape[1], shape[3], dtype=dtype)
    for a, b in zip(_grads(reference, x, grad), _grads(fused, x, grad), strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=tol), (a - b).abs().max()


@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[3:])
def test_bf16_autocast_stays_near_the_fp32_reference(shape) -> None:
    """Under bf16 autocast the GEMMs are bf16 (8-bit mantissa) and the state fp32: outputs and gradients stay
    within bf16's resolution of nn.GRU's fp32 result (nn.GRU itself runs fp32 under CPU autocast), relative to
    each tensor's scale."""
    reference, fused, x = _pair(shape, torch.float32)
    grad = torch.randn(shape[0], shape[1], shape[3])
    for a, b in zip(_grads(reference, x, grad, autocast=True), _grads(fused, x, grad, autocast=True), strict=True):
        scale = a.abs().max().clamp(min=1e-6)
        assert (a - b).abs().max() / scale < 0.03


def test_the_switch_keeps_parameter_names_and_a_recbole_state_dict_loads_into_each() -> None:
    models = {impl: NARM(50, 8, 16, 2, gru_impl=impl) for impl in ("torch", "fused")}
    names = {impl: list(m.state_dict()) for impl, m in models.items()}
    assert names["torch"] == names["fused"]
    assert "gru.weight_ih_l0" in names["fused"] and "gru.weight_hh_l1" in names["fused"]
    assert type(models["torch"].gru) is nn.GRU and isinstance(models["fused"].gru, nn.GRU)
    state = models["torch"].state_dict()
    seq, length = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]]), torch.tensor([3, 1])
    scores = {}
    for impl, model in models.items():
        model.load_state_dict(state)
        scores[impl] = model.eval().predict(seq, length)
    assert torch.allclose(scores["torch"], scores["fused"], atol=1e-5)
    with pytest.raises(ValueError, match="gru_impl 'auto'"):
        NARM(5, gru_impl="auto")


def test_a_training_step_through_the_fused_gru_matches_torch() -> None:
    """A whole NARM step (dropout off): the loss and every parameter's gradient, fused vs torch."""
    torch.manual_seed(0)
    seq = torch.randint(1, 40, (32, 12))
    length = torch.randint(1, 13, (32,))
    seq = seq * (torch.arange(12) < length.unsqueeze(1))
    target = torch.randint(1, 40, (32,))
    grads = {}
    base = NARM(40, 16, 24, 1, dropout_probs=(0.0, 0.0), gru_impl="torch")
    for impl in ("torch", "fused"):
        model = NARM(40, 16, 24, 1, dropout_probs=(0.0, 0.0), gru_impl=impl)
        model.load_state_dict(base.state_dict())
        loss = nn.functional.cross_entropy(model.full_scores(model(seq, length)), target)
        loss.backward()
        grads[impl] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert torch.allclose(grads["torch"][0], grads["fused"][0], atol=1e-6)
    for name, grad in grads["torch"][1].items():
        assert torch.allclose(grad, grads["fused"][1][name], atol=1e-5), name
