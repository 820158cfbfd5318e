"""The fused cg2a ops against the plain-PyTorch reference (float64, fresh random
inputs), their registration (opcheck, gradcheck, torch.compile), edge cases,
aggregator properties and error messages."""
from __future__ import annotations

import os

import pytest
import torch

from cg2a_ext import has_cuda_kernels, reference
from cg2a_ext import ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # conftest skips it without a device


def random_shapes(gen: torch.Generator, count: int) -> list[tuple[int, ...]]:
    shapes = []
    for _ in range(count):
        dims = int(torch.randint(1, 4, (), generator=gen))
        shapes.append(tuple(int(torch.randint(1, 12, (), generator=gen)) for _ in range(dims)))
    return shapes


def stacked(k: int, shapes, dtype=torch.float64, device="cpu", gen=None, layout="contiguous"):
    """Random stacked gradients [K, *shape]; `layout` makes them non-contiguous."""
    grads = []
    for i, shape in enumerate(shapes):
        if layout == "row_slices" or (layout == "mixed" and i % 3 == 1):
            # rows that are each contiguous but lie apart in a larger buffer
            numel = int(torch.tensor(shape).prod())
            big = torch.randn(k, numel + 5, generator=gen, dtype=torch.float64)
            g = big[:, 2 : 2 + numel].reshape(k, *shape) if len(shape) == 1 else big[:, 2 : 2 + numel].unflatten(1, shape)
        elif layout == "transposed" or (layout == "mixed" and i % 3 == 2 and len(shape) >= 2):
            g = torch.randn(k, *reversed(shape), generator=gen, dtype=torch.float64)
            g = g.permute(0, *range(len(shape), 0, -1))
        else:
            g = torch.randn(k, *shape, generator=gen, dtype=torch.float64)
        grads.append(g.to(device=device, dtype=dtype))
    return grads


def assert_close_lists(actual, expected, **tol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(12))
def test_aggregate_matches_reference_float64(device, seed):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 9, (), generator=gen))
    count = [1, 2, 24, 200][seed % 4]
    layout = ["contiguous", "mixed", "row_slices", "transposed"][(seed // 4) % 4]
    shapes = random_shapes(gen, count)
    grads = stacked(k, shapes, device=device, gen=gen, layout=layout)
    gamma = float(torch.rand((), generator=gen)) * 0.5
    for gas in (True, False):
        for sgs in (True, False):
            for mask in ("agree", "positive"):
                fused = ops.aggregate(grads, gamma, gas=gas, sgs=sgs, mask=mask)
                ref = reference.aggregate(grads, gamma, gas=gas, sgs=sgs, mask=mask)
                assert_close_lists(fused.grads, ref.grads)
                torch.testing.assert_close(fused.gram, ref.gram)
                torch.testing.assert_close(fused.weights, ref.weights)
                torch.testing.assert_close(fused.conflict_fraction, ref.conflict_fraction)
                assert not bool(fused.nonfinite)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [9, 13, 32])
def test_runtime_k_path(device, k):
    gen = torch.Generator().manual_seed(k)
    grads = stacked(k, random_shapes(gen, 7), device=device, gen=gen, layout="mixed")
    torch.testing.assert_close(ops.gram(grads), reference.gram(grads))
    weights = torch.randn(k, generator=gen, dtype=torch.float64).to(device)
    assert_close_lists(ops.combine(grads, weights, 0.3), reference.combine(grads, weights, 0.3))
    for mask in ("agree", "positive"):
        fused = ops.aggregate(grads, 0.3, mask=mask)
        ref = reference.aggregate(grads, 0.3, mask=mask)
        assert_close_lists(fused.grads, ref.grads)
        torch.testing.assert_close(fused.weights, ref.weights)
        torch.testing.assert_close(fused.conflict_fraction, ref.conflict_fraction)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 3, 4, 8, 13])
def test_chunk_boundaries_and_vector_tails(device, dtype, k):
    """Sizes that end mid-register and cross the 2^15-element chunks of the CPU passes (whose loops
    are vectorised over elements), with exact zeros (which never agree) and sign-agreeing columns."""
    gen = torch.Generator().manual_seed(100 * k + len(str(dtype)))
    sizes = [1, 2, 3, 5, 7, 9, 31, 2**15 - 1, 2**15, 2**15 + 1, 2 * 2**15 + 3]
    grads = []
    for n in sizes:
        g = torch.randn(k, n, generator=gen, dtype=torch.float64)
        g[:, ::5] = g[:, ::5].abs()        # columns where all K agree (positive)
        g[:, 1::7] = -g[:, 1::7].abs()     # ... (negative)
        g[0, 2::11] = 0.0                  # an exact zero disagrees
        grads.append(g.to(device=device, dtype=dtype))
    exact = [g.double() for g in grads]   # the oracle sees the same rounded inputs
    for mask in ("agree", "positive"):
        fused = ops.aggregate(grads, 0.3, mask=mask)
        ref = reference.aggregate(exact, 0.3, mask=mask)
        torch.testing.assert_close(fused.gram.cpu(), ref.gram.cpu(), rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(fused.weights.cpu(), ref.weights.cpu(), rtol=1e-12, atol=1e-12)
        # every element's mask decision is exact, so the conflict count is too
        assert float(fused.conflict_fraction) == pytest.approx(float(ref.conflict_fraction), abs=1e-15)
        tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
        assert_close_lists([g.double() for g in fused.grads], ref.grads, rtol=tol, atol=tol)
    # all weights zero (a non-finite input under nonfinite="zero"): exact zeros everywhere
    grads[-1][0, 17] = float("nan")
    zeroed = ops.aggregate(grads, 0.3, nonfinite="zero")
    assert bool(zeroed.nonfinite) and all(bool((g == 0).all()) for g in zeroed.grads)


def test_k_above_limit_is_rejected():
    grads = [torch.randn(33, 4)]
    with pytest.raises(ValueError, match="K = 33 exceeds"):
        ops.gram(grads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype,tol",
    [(torch.float32, dict(rtol=1e-5, atol=1e-5)), (torch.float16, dict(rtol=2e-3, atol=2e-3)),
     (torch.bfloat16, dict(rtol=2e-2, atol=2e-2))],
)
def test_low_precision_dtypes(device, dtype, tol):
    gen = torch.Generator().manual_seed(3)
    grads = stacked(4, random_shapes(gen, 30), dtype=dtype, device=device, gen=gen)
    fused = ops.aggregate(grads, 0.25)
    # The oracle sees exactly the same (rounded) inputs, computed in float64.
    ref = reference.aggregate([g.double() for g in grads], 0.25)
    # Gram and weights are accumulated and formed in float64 for every dtype.
    assert fused.gram.dtype == torch.float64 and fused.weights.dtype == torch.float64
    torch.testing.assert_close(fused.gram, ref.gram, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused.weights, ref.weights, rtol=1e-12, atol=1e-12)
    assert_close_lists([g.double() for g in fused.grads], ref.grads, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_out_is_written_in_place_including_non_contiguous(device):
    gen = torch.Generator().manual_seed(5)
    grads = stacked(3, [(6, 4), (5,), (3, 2, 2)], device=device, gen=gen)
    out = [torch.full((6, 4), 7.0, dtype=torch.float64, device=device),
           torch.full((5,), 7.0, dtype=torch.float64, device=device),
           torch.full((2, 2, 3), 7.0, dtype=torch.float64, device=device).permute(2, 1, 0)]
    result = ops.aggregate(grads, 0.25, out=out)
    assert all(r is o for r, o in zip(result.grads, out))
    assert_close_lists(out, reference.aggregate(grads, 0.25).grads)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_cases(device):
    zeros = [torch.zeros(3, 10, dtype=torch.float64, device=device)]
    result = ops.aggregate(zeros, 0.25)
    torch.testing.assert_close(result.weights, torch.full((3,), 1 / 3, dtype=torch.float64, device=device))
    assert torch.count_nonzero(result.grads[0]) == 0
    assert float(result.conflict_fraction) == 1.0  # exact zeros never agree

    # one zero row: every element has a zero, so every element is conflicting
    g = torch.randn(3, 50, dtype=torch.float64, device=device)
    g[1] = 0
    result = ops.aggregate([g], 0.2)
    assert float(result.conflict_fraction) == 1.0
    torch.testing.assert_close(result.grads[0], reference.aggregate([g], 0.2).grads[0])

    # exact zeros in some elements only
    g = torch.randn(4, 40, dtype=torch.float64, device=device).abs() + 0.1
    g[2, :5] = 0
    result = ops.aggregate([g], 0.2)
    assert float(result.conflict_fraction) == pytest.approx(5 / 40)

    # all-negative: agree under "agree", conflict under "positive"
    neg = -(torch.rand(4, 30, dtype=torch.float64, device=device) + 0.1)
    assert float(ops.aggregate([neg], 0.2, mask="agree").conflict_fraction) == 0.0
    assert float(ops.aggregate([neg], 0.2, mask="positive").conflict_fraction) == 1.0
    # exact zeros conflict under both masks
    for mask in ("agree", "positive"):
        assert float(ops.aggregate(zeros, 0.2, mask=mask).conflict_fraction) == 1.0
    w = ops.aggregate([neg], 0.2, mask="positive").weights
    torch.testing.assert_close(ops.aggregate([neg], 0.2, mask="positive").grads[0], 0.2 * (w[:, None] * neg).sum(0))

    # K = 1: the weight is +-1, every nonzero element agrees with itself
    one = torch.randn(1, 20, dtype=torch.float64, device=device)
    result = ops.aggregate([one], 0.2)
    torch.testing.assert_close(result.grads[0], one[0])
    assert float(result.conflict_fraction) == 0.0

    # empty tensors mixed with non-empty ones
    grads = [torch.randn(2, 0, dtype=torch.float64, device=device), torch.randn(2, 5, dtype=torch.float64, device=device)]
    assert_close_lists(ops.aggregate(grads, 0.3).grads, reference.aggregate(grads, 0.3).grads)


@pytest.mark.parametrize("seed", range(4))
def test_permutation_invariance(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    k = 2 + seed
    grads = stacked(k, random_shapes(gen, 10), gen=gen)
    perm = torch.randperm(k, generator=gen)
    base = ops.aggregate(grads, 0.25)
    permuted = ops.aggregate([g[perm] for g in grads], 0.25)
    assert_close_lists(permuted.grads, base.grads)
    torch.testing.assert_close(permuted.weights, base.weights[perm])
    torch.testing.assert_close(permuted.conflict_fraction, base.conflict_fraction)


@pytest.mark.parametrize("c", [1e-3, 0.5, 7.0])
def test_positive_scaling_scales_the_result(c):
    gen = torch.Generator().manual_seed(7)
    grads = stacked(4, random_shapes(gen, 12), gen=gen)
    base = ops.aggregate(grads, 0.25)
    scaled = ops.aggregate([c * g for g in grads], 0.25)
    assert_close_lists(scaled.grads, [c * g for g in base.grads])
    torch.testing.assert_close(scaled.weights, base.weights)


def test_gas_weights_follow_eq8():
    gen = torch.Generator().manual_seed(9)
    grads = stacked(5, random_shapes(gen, 6), gen=gen)
    result = ops.aggregate(grads, 0.25)
    flat = torch.cat([g.reshape(5, -1) for g in grads], 1)
    r = flat @ flat.sum(0)
    torch.testing.assert_close(result.weights, r / r.abs().sum())
    assert float(result.weights.abs().sum()) == pytest.approx(1.0)


def test_deterministic_across_calls_and_thread_counts():
    gen = torch.Generator().manual_seed(11)
    grads = stacked(4, [(300_000,), (1000, 70), (17,)], dtype=torch.float32, gen=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.aggregate(grads, 0.25)
        torch.set_num_threads(max(2, threads))
        two = ops.aggregate(grads, 0.25)
        again = ops.aggregate(grads, 0.25)
    finally:
        torch.set_num_threads(threads)
    for other in (two, again):
        assert torch.equal(one.gram, other.gram)
        assert all(torch.equal(a, b) for a, b in zip(one.grads, other.grads))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_nonfinite_raises_and_writes_nothing(device, dtype):
    g = torch.randn(3, 10, dtype=dtype, device=device)
    g[1, 4] = float("nan")
    out = [torch.full((10,), 5.0, dtype=dtype, device=device)]
    with pytest.raises(FloatingPointError, match="non-finite input: an input gradient contains NaN or Inf"):
        ops.aggregate([g], 0.25, out=out)
    assert torch.equal(out[0], torch.full_like(out[0], 5.0))
    with pytest.raises(ValueError, match="non-finite input"):  # also a ValueError, as the raw op raises
        ops.aggregate([g], 0.25)
    g[1, 4] = float("inf")
    result = ops.aggregate([g], 0.25, out=out, nonfinite="zero")
    assert bool(result.nonfinite) and not bool(result.overflow) and bool(result.zeroed)
    assert torch.count_nonzero(out[0]) == 0 and torch.isfinite(out[0]).all()
    assert torch.count_nonzero(result.weights) == 0
    functional = ops.aggregate([g], 0.25, nonfinite="zero")
    assert bool(functional.nonfinite) and torch.count_nonzero(functional.grads[0]) == 0


def test_bad_input_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="empty list"):
        ops.aggregate([], 0.2)
    with pytest.raises(ValueError, match=r"grads\[1\] has K = 2"):
        ops.aggregate([x, torch.randn(2, 4)], 0.2)
    with pytest.raises(ValueError, match=r"grads\[1\] is on meta"):
        ops.aggregate([x, torch.randn(3, 4, device="meta")], 0.2)
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype torch.float64 but grads\[0\] has torch.float32"):
        ops.aggregate([x, torch.randn(3, 4, dtype=torch.float64)], 0.2)
    with pytest.raises(TypeError, match="has dtype torch.int64; expected float32"):
        ops.aggregate([torch.ones(3, 4, dtype=torch.int64)], 0.2)
    with pytest.raises(ValueError, match="gamma = nan; expected a finite value in \\[0, 1\\]"):
        ops.aggregate([x], float("nan"))
    with pytest.raises(ValueError, match="gamma = 1.5"):
        ops.aggregate([x], 1.5)
    with pytest.raises(ValueError, match="unknown nonfinite policy 'skip'"):
        ops.aggregate([x], 0.2, nonfinite="skip")
    with pytest.raises(ValueError, match=r"out\[0\] has shape \[5\] but grads\[0\] holds gradients of shape \[4\]"):
        ops.aggregate([x], 0.2, out=[torch.zeros(5)])
    with pytest.raises(ValueError, match="unknown mask 'sometimes'"):
        ops.aggregate([x], 0.2, mask="sometimes")
    with pytest.raises(ValueError, match="0-dimensional"):
        ops.gram([torch.tensor(1.0)])
    with pytest.raises(TypeError, match="single tensor"):
        ops.gram(x)
    # the C++ checks give the same kind of message to direct op callers
    with pytest.raises(ValueError, match="weights must have shape"):
        torch.ops.cg2a.combine([x], torch.ones(2), 0.2, 0)
    with pytest.raises(ValueError, match="unknown mask mode 7"):
        torch.ops.cg2a.combine([x], torch.ones(3), 0.2, 7)


def _opcheck_inputs():
    gen = torch.Generator().manual_seed(13)
    grads = stacked(3, [(4, 3), (5,)], gen=gen)
    weights = torch.randn(3, dtype=torch.float64, generator=gen)
    return grads, weights


def test_opcheck_all_ops():
    grads, weights = _opcheck_inputs()
    torch.library.opcheck(torch.ops.cg2a.gram.default, ([g.requires_grad_() for g in grads],))
    grads, weights = _opcheck_inputs()
    torch.library.opcheck(torch.ops.cg2a.combine.default, ([g.requires_grad_() for g in grads], weights.requires_grad_(), 0.25, 0))
    grads, weights = _opcheck_inputs()
    out = [torch.empty(g.shape[1:], dtype=g.dtype) for g in grads]
    torch.library.opcheck(torch.ops.cg2a.combine_out.default, (grads, weights, 0.25, 1, out))
    for gas, mask, nonfinite in ((True, "agree", "raise"), (False, "positive", "zero")):
        grads, _ = _opcheck_inputs()
        torch.library.opcheck(torch.ops.cg2a.aggregate.default,
                              ([g.requires_grad_() for g in grads], 0.25, gas, mask, nonfinite))
        grads, _ = _opcheck_inputs()
        out = [torch.empty(g.shape[1:], dtype=g.dtype) for g in grads]
        torch.library.opcheck(torch.ops.cg2a.aggregate_out.default, (grads, 0.25, gas, mask, nonfinite, out))


def test_gradcheck_gram_and_combine():
    grads, weights = _opcheck_inputs()
    leaves = [g.clone().requires_grad_() for g in grads]
    assert torch.autograd.gradcheck(lambda *gs: ops.gram(list(gs)), leaves)
    w = weights.clone().requires_grad_()
    # gradcheck perturbs inputs by 1e-6; keep values away from 0 so the mask is constant
    safe = [(g.sign() * (g.abs() + 0.1)).detach().requires_grad_() for g in grads]
    assert torch.autograd.gradcheck(lambda w, *gs: tuple(ops.combine(list(gs), w, 0.3)), [w, *safe])


@pytest.mark.parametrize("gas", [True, False])
@pytest.mark.parametrize("mask", ["agree", "positive"])
def test_aggregate_gradient_matches_reference_autograd(gas, mask):
    """d(loss)/d(grads) through the fused op (its registered backward) equals
    autograd through the plain-PyTorch reference, including the path
    through the Gram matrix and the GAS weights."""
    gen = torch.Generator().manual_seed(19)
    base = stacked(4, [(6, 3), (5,), (2, 2, 2)], gen=gen, layout="mixed")
    probes = [torch.randn(g.shape[1:], dtype=torch.float64, generator=gen) for g in base]
    a = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    b = torch.randn(4, dtype=torch.float64, generator=gen)

    def gradients(aggregate):
        leaves = [g.detach().clone().requires_grad_() for g in base]
        result = aggregate(leaves, 0.3, gas=gas, mask=mask)
        loss = sum((o * p).sum() for o, p in zip(result.grads, probes)) + (result.gram * a).sum() + result.weights @ b
        return torch.autograd.grad(loss, leaves)

    for fused, expected in zip(gradients(ops.aggregate), gradients(reference.aggregate)):
        torch.testing.assert_close(fused, expected)


def test_gradcheck_aggregate():
    gen = torch.Generator().manual_seed(23)
    grads = stacked(3, [(4, 3), (5,)], gen=gen)
    # gradcheck perturbs inputs by 1e-6; keep values away from 0 so the mask is constant
    safe = [(g.sign() * (g.abs() + 0.1)).detach().requires_grad_() for g in grads]

    def fn(*gs):
        result = ops.aggregate(list(gs), 0.3)
        return (*result.grads, result.gram, result.weights)

    assert torch.autograd.gradcheck(fn, safe)


def test_aggregate_under_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(17)
    grads = stacked(4, [(8, 5), (7,), (2, 3, 3)], gen=gen)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(grads, out):
        result = ops.aggregate(grads, 0.25, out=out)
        return result.weights, result.conflict_fraction

    out = [torch.zeros(g.shape[1:], dtype=g.dtype) for g in grads]
    weights, fraction = step(grads, out)
    ref = reference.aggregate(grads, 0.25)
    assert_close_lists(out, ref.grads)
    torch.testing.assert_close(weights, ref.weights)
    torch.testing.assert_close(fraction, ref.conflict_fraction)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def functional(grads):
        result = ops.aggregate(grads, 0.25, mask="positive", nonfinite="zero")
        return result.grads, result.nonfinite

    results, nonfinite = functional(grads)
    assert_close_lists(results, reference.aggregate(grads, 0.25, mask="positive").grads)
    assert not bool(nonfinite)


def test_fake_and_meta_kernels():
    """Meta inputs give meta outputs of the right shapes and dtypes (the fake
    kernels), and FakeTensorMode runs the library's checks."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    grads = [torch.empty(4, 3, 5, device="meta"), torch.empty(4, 7, device="meta")]
    result = ops.aggregate(grads, 0.25)
    assert [tuple(r.shape) for r in result.grads] == [(3, 5), (7,)]
    assert result.gram.shape == (4, 4) and result.gram.dtype == torch.float64 and result.gram.is_meta
    assert result.weights.shape == (4,) and result.nonfinite.dtype == torch.bool
    with FakeTensorMode():
        fake = [torch.empty(4, 3, 5), torch.empty(4, 7)]
        assert ops.aggregate(fake, 0.25).gram.shape == (4, 4)
        with pytest.raises(ValueError, match=r"grads\[1\] has K = 3"):
            ops.aggregate([fake[0], torch.empty(3, 7)], 0.25)


def test_cuda_kernels_compiled_when_expected():
    if os.environ.get("CG2A_EXPECT_CUDA") == "1":
        assert has_cuda_kernels(), "CG2A_EXPECT_CUDA=1 but cg2a_ext._C was built without its CUDA kernels"
    else:
        assert isinstance(has_cuda_kernels(), bool)
