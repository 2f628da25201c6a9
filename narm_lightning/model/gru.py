"""A GRU for NARM's shape of work (no bias, batch first, the whole sequence, zero initial state) whose step
is one GEMM and one compiled elementwise kernel, with a hand-derived backward.

Why by hand: ``nn.GRU`` on CPU runs each step as a GEMM plus ~10 separate elementwise ops (and, under bf16
autocast, ~11 dtype copies a step); ``torch.compile`` of ``nn.GRU`` leaves it one opaque op, and no maintained
library ships a fused CPU GRU cell with a backward. What this one does (``model.gru_impl: fused``):

* forward: the input projection of all steps is one GEMM; each step is one GEMM (``h @ W_hh^T``, written into
  a preallocated buffer) and one compiled kernel that reads the two projections and the state and writes the
  next state (fp32) and its GEMM-dtype copy (and, for NARM, a batch-major copy: ``FusedGRU.forward_readers``);
* backward: per step one compiled kernel that recomputes the gates from the saved projections (cheaper than
  storing them: it halves the forward's writes), adds the step's incoming gradients, and writes the gate
  gradients, and one GEMM (``dgh @ W_hh``);
  the weight gradients and the input gradient are three GEMMs over all steps at once;
* bf16 autocast: the GEMMs run in bf16 (AMX where the CPU has it); the state and the gate math stay fp32;
* inference (``forward_by_length``, what NARM's evaluation on CPU runs): rows sorted by length, each step on
  the rows still inside their history only; the first layer's input projection gathered from a projected
  embedding table inside the step's kernel; fp32.

The kernels are compiled by ``torch.compile`` (inductor's C++ backend) on first use, a few seconds once a
process, cached on disk after that (inductor's own cache; and a marker that this host's vector ISA passed
inductor's probe, which otherwise starts 10 Python processes in each of ours: ``isa_probe_marker``); where that
cannot work (no C++ compiler) the same functions run eagerly,
with one warning. ``model.gru_impl: auto`` picks fused on CPU and ``nn.GRU`` elsewhere (cuDNN on
a GPU is faster than anything here). Called without a gradient, the layer itself is ``nn.GRU``'s own forward.

Parameters are ``nn.GRU``'s, with its names (``weight_ih_l0``, ``weight_hh_l0``, ...) and initialisation, so
RecBole state dicts load unchanged and ``model.gru_impl`` can be switched on a trained model.
``tests/model/test_gru.py`` holds outputs and every gradient against ``nn.GRU``'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
RECOMPILE_LIMIT = 64  # variants of each step kernel (dtype, shape class, strides) before dynamo falls back to eager


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The GEMMs' dtype: autocast's lower precision where it is on for this device, else the input's."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _gates(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """r, z, n (nn.GRU's gate order) in the state's dtype, from the two projections ``[B, 3H]``."""
    hidden = h.shape[1]
    gi, gh = gi.to(h.dtype), gh.to(h.dtype)
    r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = torch.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    gh_n = gh[:, 2 * hidden:]
    n = torch.tanh(gi[:, 2 * hidden:] + r * gh_n)
    return r, z, n, gh_n


def _step_forward(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor,
                  h_low_out: torch.Tensor | None, rows_out: torch.Tensor | None = None) -> None:
    """h' = (1 - z) * n + z * h into ``h_out`` (state dtype), into ``h_low_out`` when the GEMMs run in a lower
    dtype (their dtype), and into ``rows_out`` (this step of a batch-major output) where given."""
    _, z, n, _ = _gates(gi, gh, h)
    h_next = n + z * (h - n)
    h_out.copy_(h_next)
    for out in (h_low_out, rows_out):
        if out is not None:
            out.copy_(h_next)


def _step_forward_rows(table: torch.Tensor, ids: torch.Tensor, gh: torch.Tensor, h: torch.Tensor,
                       h_out: torch.Tensor) -> None:
    """``_step_forward`` whose input projection is rows ``ids`` of a projected table (inference): compiled, the
    gather is a load inside the kernel, not a copy of its own."""
    _step_forward(table[ids], gh, h, h_out, None)


def _step_backward(dh_carry: torch.Tensor, dh_gemm: torch.Tensor, grad: torch.Tensor | None,
                   grad_rows: torch.Tensor | None, gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor,
                   dgi_out: torch.Tensor, dgh_out: torch.Tensor) -> torch.Tensor:
    """One step back: the state's gradient is the carried part (dh * z of the step after), the GEMM part
    (dgh @ W_hh of the step after) and the gradients of the step's outputs (``grad`` of the time-major output,
    ``grad_rows`` of the batch-major one; None where an output has none); writes d(pre-activations) on the
    input side and on the hidden side (the same for r and z, r times it for n) and returns the carry for the
    step before."""
    dh = dh_carry + dh_gemm.to(dh_carry.dtype)
    for g in (grad, grad_rows):
        if g is not None:
            dh = dh + g.to(dh.dtype)
    r, z, n, gh_n = _gates(gi, gh, h_prev)
    dn = dh * (1 - z) * (1 - n * n)
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * gh_n * r * (1 - r)
    dgi_out.copy_(torch.cat([dr, dz, dn], dim=1))
    dgh_out.copy_(torch.cat([dr, dz, dn * r], dim=1))
    return dh * z


class _Kernels:
    """The step functions, each compiled on first call; eager (the same code) for good once compiling fails.
    Callers run them inside ``limits()`` (once around the loop of steps: the patch itself costs microseconds)."""

    def __init__(self, functions: dict[str, Callable[..., Any]]) -> None:
        self.functions = dict(functions)
        self.compiled: dict[str, Callable[..., Any]] = {}
        self.failed = False
        self.probe_known: bool | None = None  # this host's ISA probe passed before (read once, at first compile)

    @staticmethod
    def limits() -> Any:
        """Dynamo's limit on variants of one function (8) raised while the kernels run, not process-wide (it is
        the user's process): each step's views differ in storage offset (0 for the first step), inference
        steps in their number of rows, and tests and sweeps add dtypes and hidden sizes; past the limit dynamo
        would stop compiling them.

        Private API: torch has no public setting for this limit (``torch.compiler`` exposes none; its docs point
        to ``torch._dynamo.config``). ``tests/system/test_private_apis.py`` fails when the name changes."""
        return torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT)

    def __call__(self, name: str, *args: torch.Tensor | None) -> Any:
        if self.failed:
            return self.functions[name](*args)
        if self.probe_known is None:
            self.probe_known = isa_probe_marker().exists()
        if name not in self.compiled:
            # dynamic=None: one specialised kernel for the first shape, one shape-generic kernel if the shape
            # changes (an epoch's last batch, an inference step's rows); fullgraph: a graph break would be a bug.
            # use_decompose_tanh: tanh as 2 / (1 + exp(-2x)) - 1, one exp instead of Sleef's tanh: the step's
            # kernels are bound by their transcendental functions (measured: forward 0.57 -> 0.33 ms, backward
            # 0.80 -> 0.59 ms at B=2048, H=128; absolute error ~1e-7 in fp32, 1e-16 in fp64).
            # vec_isa_ok: inductor proves each vector ISA of the CPU's flags by compiling a probe and loading it in
            # 10 fresh Python processes, ~1.4 s of every process's first epoch; once that passed on this host
            # (same torch, CPU capability and compiler: isa_probe_marker), later processes skip it.
            # cpp_cache_precompile_headers off: inductor checks its precompiled header in every process (a
            # preprocessor run and a hash); these small kernels build about as fast without it (measured: a first
            # build 4.2 vs 4.4 s; a cached kernel's first call 0.76 -> 0.61 s, a process's first training batch
            # 1.85-1.89 -> 1.73-1.76 s)
            options: dict[str, Any] = {"cpp.use_decompose_tanh": True, "cpp_cache_precompile_headers": False}
            if self.probe_known:
                options["cpp.vec_isa_ok"] = True
            self.compiled[name] = torch.compile(self.functions[name], fullgraph=True, options=options)
            # one kernel for every batch size from the first call on (an epoch's short last batch, inference's
            # shrinking rows): the row count is symbolic, the hidden width static, so the kernel vectorises as a
            # fixed-shape one does (measured: same speed at 2048 rows) and two recompiles a process are saved.
            # Size 1 would be specialised anyway (dynamo's 0/1 rule): left static. Private API: torch.compiler has
            # no public way to mark one dimension dynamic (its docs point to torch._dynamo.mark_dynamic);
            # tests/system/test_private_apis.py fails when it stops doing this.
            for arg in args:
                if arg is not None and arg.dim() and arg.size(0) > 1:
                    torch._dynamo.mark_dynamic(arg, 0)
        try:
            result = self.compiled[name](*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure: same math, eagerly
            if self.probe_known:  # maybe the host changed under the marker: probe as torch does, once more
                isa_probe_marker().unlink(missing_ok=True)
                self.probe_known, self.compiled = False, {}
                return self(name, *args)
            self.failed = True
            log.warning("model.gru_impl=fused: torch.compile could not build the GRU's kernels (%s: %s); running "
                        "them eagerly (correct, slower). Inductor needs a C++ compiler (g++) on PATH.",
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            return self.functions[name](*args)
        if not self.probe_known:
            _write_marker(isa_probe_marker())
            self.probe_known = True  # written or not, this process has probed
        return result


def isa_probe_marker() -> Path:
    """Where a process records that inductor's probe of this host's vector ISA passed: a file under the user's
    cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), keyed by what the probe depends on (torch's version, the
    vector ISA torch runs on this CPU, the C++ compiler), so another torch, CPU kind or compiler probes again.
    Which ISAs inductor then uses still comes from the CPU's own flags: the marker only skips the probe."""
    capability = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or ""
    key = hashlib.sha256("\n".join([torch.__version__, capability, compiler]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "narm-lightning" / f"inductor-isa-{key}.ok"


def _write_marker(path: Path) -> None:
    """Best effort: a cache folder that cannot be written only means the next process probes again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"inductor's vector-ISA probe passed with torch {torch.__version__}\n", encoding="utf-8")
    except OSError:
        pass


KERNELS = _Kernels({"gru_forward": _step_forward, "gru_forward_rows": _step_forward_rows,
                    "gru_backward": _step_backward})


def _steps_buffer(steps: int, batch: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty time-major ``[steps, batch, width]`` whose steps all start past storage offset 0.

    The kernels take any batch size, which makes a view's storage offset symbolic, and dynamo specialises a
    symbolic 0: a first step at offset 0 would compile every kernel a second time."""
    return torch.empty(steps + 1, batch, width, dtype=dtype, device=device)[1:]


def _rows_buffer(batch: int, steps: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty batch-major ``[batch, steps, width]``, contiguous, starting past storage offset 0 (as above)."""
    flat = torch.empty(batch * steps * width + width, dtype=dtype, device=device)
    return flat[width:].view(batch, steps, width)


def _past_offset_one(grad: torch.Tensor | None, t: int, dim: int) -> torch.Tensor | None:
    """Step ``t`` of an incoming gradient (``dim``: its time dimension), copied where its view would start at
    storage offset 0 or 1 (an autograd-made gradient's first step; see ``_steps_buffer``), with the view's
    strides (a kernel is compiled for those too)."""
    if grad is None:
        return None
    step = grad.select(dim, t)
    if step.storage_offset() > 1:
        return step
    span = sum((size - 1) * stride for size, stride in zip(step.shape, step.stride(), strict=True)) + 1
    copy = torch.empty(span + 2, dtype=step.dtype, device=step.device).as_strided(step.shape, step.stride(), 2)
    return copy.copy_(step)


class _GRULayer(torch.autograd.Function):
    """One GRU layer over a time-major ``x`` ``[T, B, I]`` from a zero state.

    Returns the output time-major ``[T, B, H]`` (``states`` of the recurrence, no copy; in the state dtype, or
    with ``low_out`` in the GEMMs' dtype), with ``batch_major`` the same numbers again as a batch-major
    ``[B, T, H]`` tensor of the GEMMs' dtype, and with ``last_index`` ``[B]`` the state after each row's step
    ``last_index`` (state dtype). Why: NARM reads the output three ways (the attention's gate row by row, its
    weighted sum as a batched GEMM over each row's steps, the last state). Given one tensor, autograd would add
    their ``[B, T, H]`` gradients and the layer would transpose and cast it, whole passes over memory (a bf16
    add of 2048 x 50 x 128 takes 6.7 ms, a step's kernels 1.7 ms); given each reader its own, in the layout it
    reads, the backward adds their gradients a step at a time inside the step's kernel, and the last state's
    gradient, a row each, is added to the carry.

    Gate order is ``nn.GRU``'s (r, z, n): r = sigmoid(x W_ir + h W_hr), z = sigmoid(x W_iz + h W_hz),
    n = tanh(x W_in + r * (h W_hn)), h' = (1 - z) * n + z * h.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,  # type: ignore[override]
                gemm_dtype: torch.dtype, low_out: bool, batch_major: bool,
                last_index: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        steps, batch, inputs = x.shape
        hidden = w_hh.size(1)
        device = x.device
        state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        low = gemm_dtype != state_dtype
        w_ih_g, w_hh_g = w_ih.to(gemm_dtype), w_hh.to(gemm_dtype)
        x_rows = x.to(gemm_dtype).reshape(steps * batch, inputs)  # one pass (a cast, or a copy when strided)
        gi = _steps_buffer(steps, batch, 3 * hidden, gemm_dtype, device)
        torch.mm(x_rows, w_ih_g.t(), out=gi.view(steps * batch, 3 * hidden))
        gh = _steps_buffer(steps, batch, 3 * hidden, gemm_dtype, device)
        states = _steps_buffer(steps + 1, batch, hidden, state_dtype, device)  # [0]: h_0 = 0
        states[0].zero_()
        states_low = _steps_buffer(steps + 1, batch, hidden, gemm_dtype, device) if low else states
        states_low[0].zero_()
        rows = _rows_buffer(batch, steps, hidden, gemm_dtype, device) if batch_major else None
        w_hh_t = w_hh_g.t()
        with KERNELS.limits():
            for t in range(steps):
                torch.mm(states_low[t], w_hh_t, out=gh[t])
                KERNELS("gru_forward", gi[t], gh[t], states[t], states[t + 1], states_low[t + 1] if low else None,
                        rows[:, t] if batch_major else None)
        ctx.save_for_backward(x_rows, w_ih_g, w_hh_g, gi, gh, states, states_low, last_index)
        ctx.shapes = (batch, steps, inputs, hidden)
        ctx.dtypes = (x.dtype, w_ih.dtype, w_hh.dtype)
        ctx.set_materialize_grads(False)  # an output nobody read brings no gradient, and no pass over zeros
        result = ((states_low if low_out else states)[1:],) + ((rows,) if batch_major else ())
        if last_index is not None:
            result += (states[last_index + 1, torch.arange(batch, device=device)],)
        return result

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x_rows, w_ih_g, w_hh_g, gi, gh, states, states_low, last_index = ctx.saved_tensors
        batch, steps, inputs, hidden = ctx.shapes
        x_dtype, w_ih_dtype, w_hh_dtype = ctx.dtypes
        state_dtype, gemm_dtype, device = states.dtype, gh.dtype, gh.device
        grads = list(grads)
        grad_last = grads.pop() if last_index is not None else None
        grad, grad_rows = (grads + [None])[:2]
        # the last state's gradient enters the carry at each row's step: rows grouped by step, once
        last_rows: dict[int, torch.Tensor] = {}
        if grad_last is not None:
            order = torch.argsort(last_index, stable=True)
            counts = torch.bincount(last_index, minlength=steps).tolist()
            last_rows = {t: rows for t, rows in enumerate(torch.split(order, counts)) if rows.numel()}
            grad_last = grad_last.to(state_dtype)
        dgi = _steps_buffer(steps, batch, 3 * hidden, gemm_dtype, device)
        dgh = _steps_buffer(steps, batch, 3 * hidden, gemm_dtype, device)
        carry = torch.zeros(batch, hidden, dtype=state_dtype, device=device)
        from_gemm = torch.zeros(batch, hidden, dtype=gemm_dtype, device=device)
        with KERNELS.limits():
            for t in range(steps - 1, -1, -1):
                if t in last_rows:
                    carry.index_add_(0, last_rows[t], grad_last.index_select(0, last_rows[t]))
                carry = KERNELS("gru_backward", carry, from_gemm, _past_offset_one(grad, t, 0),
                                _past_offset_one(grad_rows, t, 1), gi[t], gh[t], states[t], dgi[t], dgh[t])
                if t:
                    from_gemm = torch.mm(dgh[t], w_hh_g)
        dgi_rows = dgi.view(steps * batch, 3 * hidden)
        grad_x = grad_w_ih = grad_w_hh = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(dgi_rows, w_ih_g).view(steps, batch, inputs).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w_ih = torch.mm(dgi_rows.t(), x_rows).to(w_ih_dtype)
        if ctx.needs_input_grad[2]:
            h_prev = states_low[:-1].reshape(steps * batch, hidden)
            grad_w_hh = torch.mm(dgh.view(steps * batch, 3 * hidden).t(), h_prev).to(w_hh_dtype)
        return grad_x, grad_w_ih, grad_w_hh, None, None, None, None


class FusedGRU(nn.GRU):
    """``nn.GRU(input_size, hidden_size, num_layers, bias=False, batch_first=True)`` whose training forward is
    the fused one above (a subclass: parameters, names and initialisation are ``nn.GRU``'s).

    ``cpu_only``: run the fused path only on CPU (``model.gru_impl: auto``). Without a gradient to compute, with
    an initial state or an unbatched input it falls back to ``nn.GRU``'s own forward.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cpu_only: bool = False) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=False, batch_first=True)
        self.cpu_only = cpu_only

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if hx is not None or not self._fused(x):
            return super().forward(x, hx)
        gemm_dtype = _compute_dtype(x)
        x_tm, last = x.transpose(0, 1), []
        with torch.autocast(x.device.type, enabled=False):
            for layer in range(self.num_layers):
                x_tm, = _GRULayer.apply(x_tm, *self._weights(layer), gemm_dtype, False, False, None)
                x_tm = x_tm.to(x.dtype)
                last.append(x_tm[-1])
        return x_tm.transpose(0, 1), torch.stack(last)

    def forward_readers(self, x: torch.Tensor, last_index: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a model that reads the last layer's output three ways, from a time-major input ``[T, B, I]``:
        (the output time-major ``[T, B, H]``, the same numbers batch-major ``[B, T, H]``, the states after each
        row's step ``last_index[b]`` ``[B, H]``).

        Where the fused path runs, the two outputs are separate tensors in the GEMMs' dtype (bf16 under
        autocast: what the readers' GEMMs would cast them to) and the backward sums the three readers'
        gradients inside its step kernel (``_GRULayer``); elsewhere they are views of ``nn.GRU``'s one output,
        and the states gathered from it.
        """
        if not self._fused(x):
            out, _ = super().forward(x.transpose(0, 1))
            gather = last_index.view(-1, 1, 1).expand(-1, 1, out.size(-1))
            return out.transpose(0, 1), out, out.gather(1, gather).squeeze(1)
        gemm_dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            for layer in range(self.num_layers - 1):
                x, = _GRULayer.apply(x, *self._weights(layer), gemm_dtype, True, False, None)
            out, rows, last = _GRULayer.apply(x, *self._weights(self.num_layers - 1), gemm_dtype, True, True,
                                              last_index)
        return out, rows, last

    def _fused(self, x: torch.Tensor) -> bool:
        """The fused path: a batched input with a gradient to compute, on CPU where ``cpu_only``."""
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return x.dim() == 3 and needs_grad and not (self.cpu_only and x.device.type != "cpu")

    def _weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")

    @torch.no_grad()
    def forward_by_length(self, x: torch.Tensor, lengths: torch.Tensor,
                          table: torch.Tensor | None = None) -> torch.Tensor:
        """Inference over left-aligned rows of ``lengths`` valid steps: the output ``[B, T, H]`` at every valid
        step (``nn.GRU``'s there, to fp32 rounding) and 0 past each row's length.

        ``x`` is the input ``[B, T, I]``, or with ``table`` given, ids ``[B, T]`` of ``table``'s rows (an
        embedding lookup): then the first layer's input projection is computed once per table row and gathered
        a step at a time, in place of the lookup and a GEMM over every step.

        Why: a padded forward spends the same work on every row for all T steps; here rows are sorted by length
        (longest first) so step t works on the rows still inside their history only, a prefix of the batch
        (ml-100k's test histories: 84% of the padded steps), and each step's input projection is produced just
        before its kernel reads it (a gather from the table, or a GEMM over the step's rows) instead of one
        [T, B, 3H] GEMM streamed from memory. Each step is the training forward's GEMM + compiled kernel, in
        fp32 (ranking wants it, whatever autocast says; fp64 stays fp64).
        """
        batch, steps = x.shape[:2]
        hidden = self.hidden_size
        dtype = (table if table is not None else x).dtype
        device = x.device
        lengths = lengths.to(device).clamp(1, steps)  # an empty row still reads step 0, as a padded forward
        order = torch.argsort(lengths, descending=True, stable=True)
        active = (lengths.unsqueeze(0) > torch.arange(steps, device=device).unsqueeze(1)).sum(1).tolist()
        seq = x.transpose(0, 1).index_select(1, order)  # time-major, longest row first
        gi = torch.empty(batch, 3 * hidden, dtype=dtype, device=device)
        gh = torch.empty_like(gi)
        with torch.autocast(device.type, enabled=False), KERNELS.limits():
            for layer in range(self.num_layers):
                w_ih = getattr(self, f"weight_ih_l{layer}").to(dtype).t()
                w_hh = getattr(self, f"weight_hh_l{layer}").to(dtype).t()
                projected = torch.mm(table, w_ih) if layer == 0 and table is not None else None
                states = torch.empty(steps + 1, batch, hidden, dtype=dtype, device=device)
                states[0].zero_()
                for t, rows in enumerate(active):
                    torch.mm(states[t, :rows], w_hh, out=gh[:rows])
                    if projected is not None:
                        KERNELS("gru_forward_rows", projected, seq[t, :rows], gh[:rows], states[t, :rows],
                                states[t + 1, :rows])
                    else:
                        torch.mm(seq[t, :rows], w_ih, out=gi[:rows])
                        KERNELS("gru_forward", gi[:rows], gh[:rows], states[t, :rows], states[t + 1, :rows], None)
                    if rows < batch:  # rows past their length: 0, as the next layer and the attention read
                        states[t + 1, rows:].zero_()
                seq = states[1:]
        return seq.transpose(0, 1).index_select(0, torch.argsort(order))
