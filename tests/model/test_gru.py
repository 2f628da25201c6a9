"""The fused GRU (``model.gru_impl``) against ``nn.GRU``: outputs, every gradient, state dicts, the switch, the
compiled kernels against the same functions run eagerly, and the eager fallback when compiling fails."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from narm_lightning.model import gru as gru_module
from narm_lightning.model.gru import FusedGRU
from narm_lightning.model.narm import NARM
from tests.helpers import autograd_node_names

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


def _reader_grads(module: nn.Module, x: torch.Tensor, last_index: torch.Tensor, grads: list[torch.Tensor | None],
                  autocast: bool = False) -> list[torch.Tensor]:
    """The three readers of ``forward_readers`` (nn.GRU: its output twice and a gather), each with its own
    upstream gradient (None: that reader is not used)."""
    x = x.clone().requires_grad_()
    module.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if isinstance(module, FusedGRU):  # time-major in, time-major first output
            outputs = module.forward_readers(x.transpose(0, 1), last_index)
        else:
            out, _ = module(x)
            outputs = (out.transpose(0, 1), out,
                       out.gather(1, last_index.view(-1, 1, 1).expand(-1, 1, out.size(-1))).squeeze(1))
    sum(((o.double() * g).sum() for o, g in zip(outputs, grads, strict=True) if g is not None),
        torch.zeros((), dtype=torch.float64)).backward()
    return [*(o.detach().double() for o in outputs), x.grad.double(), *(p.grad.double() for p in module.parameters())]


@pytest.mark.parametrize("shape,dtype,tol,used", [
    *((shape, torch.float64, 1e-12, (True, True, True)) for shape in SHAPES),
    (SHAPES[3], torch.float32, 2e-5, (True, True, True)), (SHAPES[0], torch.float64, 1e-12, (True, False, True)),
    (SHAPES[3], torch.float64, 1e-12, (False, True, False))])
def test_each_reader_gets_nn_grus_numbers_and_its_own_gradient(shape, dtype, tol, used) -> None:
    """``forward_readers``: both outputs and the states at ``last_index`` equal nn.GRU's output and its gather;
    the input and weight gradients equal nn.GRU's under three different upstream gradients (summed inside the
    step kernel, the last state's added at each row's step), also where a reader is unused (no gradient)."""
    reference, fused, x = _pair(shape, dtype)
    batch, steps, _, hidden, _ = shape
    last_index = torch.randint(0, steps, (batch,))
    last_index[0] = steps - 1  # the first step back and the last one hold a row
    last_index[-1] = 0
    grads = [torch.randn(steps, batch, hidden, dtype=torch.float64) if used[0] else None,
             torch.randn(batch, steps, hidden, dtype=torch.float64) if used[1] else None,
             torch.randn(batch, hidden, dtype=torch.float64) if used[2] else None]
    expected, got = _reader_grads(reference, x, last_index, grads), _reader_grads(fused, x, last_index, grads)
    for a, b in zip(expected, got, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=tol), (a - b).abs().max()


@pytest.mark.parametrize("shape", SHAPES[3:])
def test_readers_under_bf16_autocast_are_bf16_copies_and_stay_near_fp32(shape) -> None:
    """Under bf16 autocast both outputs are bf16 (what the readers' GEMMs would cast them to), the last state is
    fp32, and values and gradients stay within bf16's resolution of nn.GRU's fp32 result."""
    reference, fused, x = _pair(shape, torch.float32)
    batch, steps, _, hidden, _ = shape
    last_index = torch.randint(0, steps, (batch,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out2, last = fused.forward_readers(x.transpose(0, 1).clone().requires_grad_(), last_index)
    assert (out.dtype, out2.dtype, last.dtype) == (torch.bfloat16, torch.bfloat16, torch.float32)
    assert out.is_contiguous() and out2.is_contiguous() and torch.equal(out.transpose(0, 1), out2)
    grads = [torch.randn(steps, batch, hidden, dtype=torch.float64), torch.randn(batch, steps, hidden,
             dtype=torch.float64), torch.randn(batch, hidden, dtype=torch.float64)]
    expected = _reader_grads(reference, x, last_index, grads, autocast=True)
    for a, b in zip(expected, _reader_grads(fused, x, last_index, grads, autocast=True), strict=True):
        assert (a - b).abs().max() / a.abs().max().clamp(min=1e-6) < 0.03


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
    with pytest.raises(ValueError, match="gru_impl 'cudnn'"):
        NARM(5, gru_impl="cudnn")


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


def test_auto_trains_through_the_fused_gru_on_cpu_and_a_plain_call_without_gradient_is_nn_grus() -> None:
    """``auto`` (the default): a CPU training forward builds the fused layer's backward; the layer called
    without a gradient is nn.GRU's own forward, bit for bit (NARM's inference takes ``forward_by_length``)."""
    torch.manual_seed(3)
    model = NARM(30, 8, 16, 2, dropout_probs=(0.0, 0.0))
    assert isinstance(model.gru, FusedGRU) and model.gru.cpu_only
    seq, length = torch.randint(1, 30, (4, 6)), torch.tensor([6, 3, 1, 5])
    assert "_GRULayerBackward" in autograd_node_names(model(seq, length))
    reference = nn.GRU(8, 16, 2, bias=False, batch_first=True)
    reference.load_state_dict(model.gru.state_dict())
    x = torch.randn(4, 6, 8)
    with torch.no_grad():
        assert torch.equal(model.gru(x)[0], reference(x)[0])


def _histories(batch: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned item ids with lengths 0 (an empty row), 1, ``steps`` and random ones in between."""
    generator = torch.Generator().manual_seed(seed)
    length = torch.randint(0, steps + 1, (batch,), generator=generator)
    length[:3] = torch.tensor([0, 1, steps])[:batch]
    seq = torch.randint(1, 40, (batch, steps), generator=generator) * (torch.arange(steps) < length.unsqueeze(1))
    return seq, length


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_forward_by_length_is_nn_grus_output_at_every_valid_step_and_zero_past_it(shape, dtype, tol) -> None:
    """Rows sorted by length, each step on the rows still inside their history: at every valid step the output
    is the padded nn.GRU's (fp64 to rounding, fp32 within 2e-6), past a row's length exactly 0; an empty row
    reads step 0 as the padded forward does. Both inputs: a ``[B, T, I]`` tensor, and ids of a table's rows."""
    batch, steps, inputs, hidden, layers = shape
    reference, fused, _ = _pair(shape, dtype)
    table = torch.randn(40, inputs, dtype=dtype)
    seq, length = _histories(batch, steps, sum(shape))
    x = table[seq]
    with torch.no_grad():
        expected = reference(x)[0]
        for got in (fused.forward_by_length(x, length), fused.forward_by_length(seq, length, table=table)):
            valid = torch.arange(steps) < length.clamp(min=1).unsqueeze(1)
            assert got.shape == expected.shape and got.dtype == dtype
            assert torch.allclose(got[valid], expected[valid], rtol=0, atol=tol), (got - expected)[valid].abs().max()
            assert torch.equal(got[~valid], torch.zeros_like(got[~valid]))
    if dtype == torch.float32:  # ranking wants fp32: bf16 autocast around it changes nothing
        with torch.no_grad():
            plain = fused.forward_by_length(x, length)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(fused.forward_by_length(x, length), plain)


def test_narm_inference_through_the_fused_gru_takes_the_length_aware_forward(monkeypatch) -> None:
    """Eval mode without a gradient on CPU (what validation and test run): ``auto`` and ``fused`` score through
    ``forward_by_length``, within fp32 rounding of ``gru_impl=torch``'s scores; training mode, a gradient, or
    ``gru_impl=torch`` keep the padded forward."""
    calls = []
    original = FusedGRU.forward_by_length
    monkeypatch.setattr(FusedGRU, "forward_by_length", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    seq, length = _histories(9, 7, 0)
    base = NARM(40, 8, 16, 2, gru_impl="torch").eval()
    with torch.no_grad():
        expected = base.predict(seq, length)
    for impl in ("auto", "fused"):
        model = NARM(40, 8, 16, 2, gru_impl=impl)
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            model.train()(seq, length)
            assert not calls
            got = model.eval().predict(seq, length)
        assert calls and torch.allclose(got, expected, rtol=0, atol=1e-5)
        calls.clear()
        model(seq, length)  # eval mode, gradient on: the padded forward (a gradient may be wanted)
        assert not calls


def test_a_second_batch_size_and_each_dtype_still_match_nn_gru() -> None:
    """The compiled kernels are specialised to the first shape and recompiled (shape-generic) for another batch
    size, as the last batch of an epoch has: every size still gives nn.GRU's outputs and gradients."""
    for batch in (8, 5, 8, 3):
        reference, fused, x = _pair((batch, 4, 6, 5, 1), torch.float32)
        grad = torch.randn(batch, 4, 5)
        for a, b in zip(_grads(reference, x, grad), _grads(fused, x, grad), strict=True):
            assert torch.allclose(a, b, rtol=0, atol=2e-5), (batch, (a - b).abs().max())


@pytest.mark.parametrize("low", [False, True])
def test_compiled_step_kernels_equal_the_same_functions_run_eagerly(low: bool) -> None:
    """The step kernels compiled (tanh decomposed into exp) against the plain functions, fp32 state."""
    torch.manual_seed(5)
    batch, hidden = 6, 4
    gemm = torch.bfloat16 if low else torch.float32
    gi, gh = torch.randn(batch, 3 * hidden).to(gemm), torch.randn(batch, 3 * hidden).to(gemm)
    h = torch.randn(batch, hidden)
    outs = {}
    for mode in ("compiled", "eager"):
        kernels = gru_module._Kernels(gru_module.KERNELS.functions)
        kernels.failed = mode == "eager"
        h_out, h_low = torch.empty(batch, hidden), torch.empty(batch, hidden, dtype=gemm)
        y = torch.empty(batch, 2, hidden, dtype=gemm)  # a step of a batch-major [B, T, H]
        dgi, dgh = torch.empty_like(gi), torch.empty_like(gh)
        with kernels.limits():  # as the layer calls them
            kernels("gru_forward", gi, gh, h, h_out, h_low if low else None, y[:, 1])
            carry = kernels("gru_backward", torch.randn(batch, hidden, generator=torch.Generator().manual_seed(1)),
                            torch.ones(batch, hidden, dtype=gemm), torch.full((batch, hidden), 0.5),
                            torch.full((batch, hidden), -0.25, dtype=gemm), gi, gh, h, dgi, dgh)
        assert kernels.failed == (mode == "eager")  # compiled: it did not fall back
        outs[mode] = [h_out, h_low.float() if low else h_out, y[:, 1].float(), dgi.float(), dgh.float(), carry]
    tol = 2e-2 if low else 1e-5  # bf16 outputs: one rounding of an 8-bit mantissa apart at most
    for a, b in zip(outs["compiled"], outs["eager"], strict=True):
        assert torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()


def test_when_compiling_fails_the_same_math_runs_eagerly_with_one_warning(monkeypatch, caplog) -> None:
    """No C++ compiler (or any inductor failure): one warning naming the fix, and the results are nn.GRU's."""
    kernels = gru_module._Kernels(gru_module.KERNELS.functions)
    monkeypatch.setattr(gru_module, "KERNELS", kernels)

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return call

    monkeypatch.setattr(gru_module.torch, "compile", broken_compile)
    reference, fused, x = _pair((3, 5, 4, 6, 2), torch.float32)
    grad = torch.randn(3, 5, 6)
    with caplog.at_level("WARNING", logger="narm_lightning.model.gru"):
        for a, b in zip(_grads(reference, x, grad), _grads(fused, x, grad), strict=True):
            assert torch.allclose(a, b, rtol=0, atol=2e-5)
        _grads(fused, x, grad)
        seq, length = _histories(3, 5, 1)  # inference: the table-row kernel falls back too
        table = torch.randn(40, 4)
        with torch.no_grad():
            valid = torch.arange(5) < length.clamp(min=1).unsqueeze(1)
            got, expected = fused.forward_by_length(seq, length, table=table), reference(table[seq])[0]
        assert torch.allclose(got[valid], expected[valid], rtol=0, atol=2e-6)
    warnings = [r for r in caplog.records if r.name == "narm_lightning.model.gru"]
    assert kernels.failed and len(warnings) == 1
    assert "running them eagerly" in warnings[0].getMessage() and "g++" in warnings[0].getMessage()


def test_many_variants_of_a_kernel_stay_compiled() -> None:
    """More dtypes and shapes than dynamo's default 8 variants of a function (a test run, a sweep over
    hidden sizes): the kernels keep compiling instead of falling back to eager."""
    for dtype in (torch.float64, torch.float32):
        for hidden in (3, 5, 7, 9, 11, 13):
            reference, fused, x = _pair((1 + hidden % 4, 3, 4, hidden, 1), dtype)
            grad = torch.randn(x.shape[0], 3, hidden, dtype=dtype)
            for a, b in zip(_grads(reference, x, grad), _grads(fused, x, grad), strict=True):
                assert torch.allclose(a, b, rtol=0, atol=2e-5)
    assert not gru_module.KERNELS.failed


def test_each_step_kernel_compiles_once_for_every_batch_size_and_length(monkeypatch) -> None:
    """Compiling is most of a process's first-epoch overhead: a training step's two kernels take any batch size
    (an epoch's short last batch) and any number of steps (bucketed batch widths) without compiling again, and
    no step's views start at storage offset 0 or 1 (dynamo would specialise it and compile the kernel twice)."""
    graphs: list[str] = []
    real_compile = torch.compile

    def counting_compile(fn, **kwargs):
        def backend(graph, example_inputs):
            graphs.append(fn.__name__)
            return graph.forward
        return real_compile(fn, backend=backend, fullgraph=True)

    monkeypatch.setattr(gru_module, "KERNELS", gru_module._Kernels(gru_module.KERNELS.functions))
    monkeypatch.setattr(gru_module.torch, "compile", counting_compile)
    torch.compiler.reset()  # as in a fresh process: dynamo keeps what earlier tests compiled, per function
    torch.manual_seed(0)
    model = NARM(40, 8, 16, 1)
    for batch, steps in ((6, 7), (4, 3), (9, 5), (6, 7)):
        seq = torch.randint(1, 40, (batch, steps))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.full_scores(model(seq, torch.randint(1, steps + 1, (batch,)))).logsumexp(1).mean()
        loss.backward()
    assert sorted(graphs) == ["_step_backward", "_step_forward"], graphs
