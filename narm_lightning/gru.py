"""A GRU for NARM's shape of work (no bias, batch first, the whole sequence) with a hand-derived backward.

Measured (docs/performance.md, 2-core Xeon with AMX): *slower* than ``nn.GRU`` in eager mode (ml-100k epoch
17.5 s vs 15.5 s; one forward + backward at 2048 x 42 steps: 0.30 s vs 0.28 s in fp32), because the per-step
elementwise ops and their dispatch, not the GEMMs, dominate both. So ``model.gru_impl`` defaults to ``torch``;
this is the tested base for a compiled per-step kernel. What it does differently (``model.gru_impl: fused``):

* forward: the input projection of all steps is one GEMM; each step is one GEMM (``h @ W_hh^T``) and four
  in-place elementwise ops (``sigmoid`` of r and z together, ``addcmul`` + ``tanh`` for n, ``lerp`` for h)
  into preallocated buffers, which backward reuses (nothing is recomputed);
* backward: per step one GEMM (``dgh @ W_hh``) and the gate derivatives; the weight gradients and the input
  gradient are three GEMMs over all steps at once (``[T*B, 3H]`` by ``[T*B, H]``), not 3T small ones;
* bf16 autocast: the GEMMs run in bf16 (AMX where the CPU has it), the state, gates and gradients stay
  fp32, so the recurrence does not drift.

Parameters are ``nn.GRU``'s, with its names (``weight_ih_l0``, ``weight_hh_l0``, ...) and initialisation, so
RecBole state dicts load unchanged and ``model.gru_impl`` can be switched on a trained model.
``tests/test_gru.py`` holds outputs and every gradient against ``nn.GRU``'s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The GEMMs' dtype: autocast's lower precision where it is on for this device, else the input's."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _GRULayer(torch.autograd.Function):
    """One GRU layer over ``x`` ``[B, T, I]`` from a zero state; returns ``[B, T, H]``.

    Gate order is ``nn.GRU``'s (r, z, n): r = sigmoid(x W_ir + h W_hr), z = sigmoid(x W_iz + h W_hz),
    n = tanh(x W_in + r * (h W_hn)), h' = (1 - z) * n + z * h = lerp(n, h, z).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,  # type: ignore[override]
                gemm_dtype: torch.dtype) -> torch.Tensor:
        batch, steps, inputs = x.shape
        hidden = w_hh.size(1)
        state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        w_ih_g, w_hh_g = w_ih.to(gemm_dtype), w_hh.to(gemm_dtype)
        x_tm = x.transpose(0, 1).reshape(steps * batch, inputs).to(gemm_dtype)  # time-major rows
        gi = torch.mm(x_tm, w_ih_g.t()).view(steps, batch, 3 * hidden).to(state_dtype)
        gates = torch.empty(steps, batch, 3 * hidden, dtype=state_dtype, device=x.device)  # r, z, n
        gh = torch.empty(steps, batch, 3 * hidden, dtype=state_dtype, device=x.device)
        out = torch.empty(steps + 1, batch, hidden, dtype=state_dtype, device=x.device)  # out[0]: h_0 = 0
        out[0].zero_()
        w_hh_t = w_hh_g.t()
        two = 2 * hidden
        same = gemm_dtype == state_dtype
        for t in range(steps):
            h = out[t]
            if same:
                torch.mm(h, w_hh_t, out=gh[t])
            else:
                gh[t].copy_(torch.mm(h.to(gemm_dtype), w_hh_t))
            rz = torch.add(gi[t, :, :two], gh[t, :, :two], out=gates[t, :, :two]).sigmoid_()
            n = torch.addcmul(gi[t, :, two:], rz[:, :hidden], gh[t, :, two:], out=gates[t, :, two:]).tanh_()
            torch.lerp(n, h, rz[:, hidden:], out=out[t + 1])
        ctx.save_for_backward(x_tm, w_ih_g, w_hh_g, gates, gh, out)
        ctx.shapes = (batch, steps, inputs, hidden)
        ctx.dtypes = (x.dtype, w_ih.dtype, w_hh.dtype)
        return out[1:].transpose(0, 1).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x_tm, w_ih_g, w_hh_g, gates, gh, out = ctx.saved_tensors
        batch, steps, inputs, hidden = ctx.shapes
        x_dtype, w_ih_dtype, w_hh_dtype = ctx.dtypes
        state_dtype = gates.dtype
        gemm_dtype = w_hh_g.dtype
        g = grad_out.transpose(0, 1).to(state_dtype)  # [T, B, H]
        dg = torch.empty_like(gates)  # d(pre-activation) of r, z, n on the input side; the hidden side is
        # the same for r and z and r * that for n
        dh = torch.zeros(batch, hidden, dtype=state_dtype, device=gates.device)
        two = 2 * hidden
        for t in range(steps - 1, -1, -1):
            dh += g[t]
            r, z, n = gates[t, :, :hidden], gates[t, :, hidden:two], gates[t, :, two:]
            h_prev = out[t]
            # dn_pre = dh * (1 - z) * (1 - n^2)
            dn = torch.mul(dh, 1 - z).mul_(1 - n * n)
            dg[t, :, two:] = dn
            # dz_pre = dh * (h_prev - n) * z * (1 - z);  dr_pre = dn_pre * gh_n * r * (1 - r)
            torch.mul(dh, h_prev - n, out=dg[t, :, hidden:two]).mul_(z * (1 - z))
            torch.mul(dn, gh[t, :, two:], out=dg[t, :, :hidden]).mul_(r * (1 - r))
            dgh_t = torch.cat([dg[t, :, :two], dn * r], dim=1)
            if gemm_dtype == state_dtype:
                dh = torch.addmm(dh * z, dgh_t, w_hh_g)
            else:
                dh = torch.mm(dgh_t.to(gemm_dtype), w_hh_g).to(state_dtype).add_(dh * z)
        dg_rows = dg.view(steps * batch, 3 * hidden)
        dgh = dg.clone()
        dgh[:, :, two:].mul_(gates[:, :, :hidden])
        dgh_rows = dgh.view(steps * batch, 3 * hidden).to(gemm_dtype)
        dg_g = dg_rows.to(gemm_dtype)
        grad_x = grad_w_ih = grad_w_hh = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(dg_g, w_ih_g).view(steps, batch, inputs).transpose(0, 1).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w_ih = torch.mm(dg_g.t(), x_tm).to(w_ih_dtype)
        if ctx.needs_input_grad[2]:
            h_prev = out[:-1].reshape(steps * batch, hidden).to(gemm_dtype)
            grad_w_hh = torch.mm(dgh_rows.t(), h_prev).to(w_hh_dtype)
        return grad_x, grad_w_ih, grad_w_hh, None


class FusedGRU(nn.GRU):
    """``nn.GRU(input_size, hidden_size, num_layers, bias=False, batch_first=True)`` whose forward is the fused
    one above (a subclass: parameters, names and initialisation are ``nn.GRU``'s). An initial state or an
    unbatched input falls back to ``nn.GRU``'s own forward; NARM uses neither.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=False, batch_first=True)

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if hx is not None or x.dim() != 3:
            return super().forward(x, hx)
        gemm_dtype = _compute_dtype(x)
        last = []
        with torch.autocast(x.device.type, enabled=False):
            for layer in range(self.num_layers):
                x = _GRULayer.apply(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}"),
                                    gemm_dtype)
                last.append(x[:, -1])
        return x, torch.stack(last)
