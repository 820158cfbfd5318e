"""Right answers or a clear refusal: large finite inputs, overflow, outputs that
overlap inputs, and every raw op's bad-input messages (in a subprocess, so a
crash of the interpreter is a test failure, not a lost test run)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cg2a_ext
from cg2a_ext import ops, reference

# Subprocesses run where the cg2a_ext under test lies (site-packages when installed, the checkout when
# built in place), so `python -c` imports that one and not a source tree without its compiled _C.
IMPORTED_FROM = Path(cg2a_ext.__file__).resolve().parents[1]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # conftest skips it without a device
FLOAT32_MAX = torch.finfo(torch.float32).max


def signed_grads(value: float, k: int, sizes, dtype, device, seed: int = 0) -> list[torch.Tensor]:
    """Tensors of +-value (random signs), so that each element conflicts or not."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 2, (k, n), generator=gen).double() * 2 - 1).mul(value).to(device=device, dtype=dtype)
            for n in sizes]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("value", [1e19, 1.5e19, 1e20])
@pytest.mark.parametrize("gas", [True, False])
def test_large_finite_float32_inputs_give_the_float64_answer(device, value, gas):
    """Squares of these values overflow float32; the Gram and the weights are
    formed in float64, so the answer is finite and right (it used to be NaN,
    zeros, or a false 'NaN or Inf' error)."""
    grads = signed_grads(value, 4, [1000, 37, 5], torch.float32, device)
    grads[0][1] *= 0.5  # distinct gradients: GAS weights that are not all equal
    oracle = reference.aggregate([g.double() for g in grads], 0.25, gas=gas)
    assert torch.isfinite(oracle.weights).all()
    for out in (None, [torch.empty(g.shape[1:], dtype=g.dtype, device=device) for g in grads]):
        result = ops.aggregate(grads, 0.25, gas=gas, out=out)
        assert not bool(result.nonfinite) and not bool(result.overflow)
        torch.testing.assert_close(result.weights.cpu(), oracle.weights.cpu(), rtol=1e-12, atol=0)
        torch.testing.assert_close(result.gram.cpu(), oracle.gram.cpu(), rtol=1e-12, atol=0)
        for r, e in zip(result.grads, oracle.grads):
            assert torch.isfinite(r).all()
            torch.testing.assert_close(r.double().cpu(), e.cpu(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_weights_survive_huge_gram_entries(device):
    """float64 gradients whose Gram entries are finite but whose row sums would
    overflow: the weights are scale-invariant, formed after an exact scaling."""
    grads = signed_grads(1e153, 8, [10], torch.float64, device, seed=1)
    oracle = reference.aggregate([g * 2.0**-600 for g in grads], 0.25)  # the same weights, no overflow
    result = ops.aggregate(grads, 0.25)
    assert not bool(result.overflow) and not bool(result.nonfinite)
    torch.testing.assert_close(result.weights, oracle.weights, rtol=1e-12, atol=0)
    torch.testing.assert_close(result.grads[0] * 2.0**-600, oracle.grads[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_gram_overflow_is_refused_as_overflow(device):
    grads = signed_grads(1e160, 3, [50, 7], torch.float64, device)
    out = [torch.full(g.shape[1:], 5.0, dtype=torch.float64, device=device) for g in grads]
    with pytest.raises(OverflowError, match="overflow: every input is finite but their Gram matrix overflows float64"):
        ops.aggregate(grads, 0.25, out=out)
    assert all(torch.equal(o, torch.full_like(o, 5.0)) for o in out)  # nothing written
    result = ops.aggregate(grads, 0.25, out=out, nonfinite="zero")
    assert bool(result.overflow) and not bool(result.nonfinite) and bool(result.zeroed)
    assert all(torch.count_nonzero(o) == 0 for o in out)
    # a non-finite input is named as such, not as an overflow
    grads[1][0, 0] = math.inf
    with pytest.raises(FloatingPointError, match="non-finite input"):
        ops.aggregate(grads, 0.25)


@pytest.mark.parametrize("device", DEVICES)
def test_output_overflow_is_refused_as_overflow(device):
    """Values at the float32 limit: the convex combination rounds past it for
    some K. Whenever the fused combine arithmetic (the raw combine op with the
    same float32 weights) overflows, aggregate refuses with the overflow
    message (or zeroes and flags it); otherwise it returns that finite value."""
    overflowed = 0
    for k in (3, 5, 6, 7, 9, 11, 12, 13):
        grads = [torch.full((k, 64), FLOAT32_MAX, device=device)]
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64).float().to(device)
        plain = ops.combine(grads, weights, 1.0)[0]
        out = [torch.full((64,), 5.0, device=device)]
        if torch.isfinite(plain).all():
            result = ops.aggregate(grads, 0.25, gas=False, out=out)
            assert not bool(result.overflow)
            torch.testing.assert_close(out[0], plain, rtol=0, atol=0)
            continue
        overflowed += 1
        with pytest.raises(OverflowError, match="does not fit in torch.float32"):
            ops.aggregate(grads, 0.25, gas=False, out=out)
        assert torch.count_nonzero(out[0]) == 0  # zeroed, never inf
        result = ops.aggregate(grads, 0.25, gas=False, nonfinite="zero")
        assert bool(result.overflow) and not bool(result.nonfinite)
        assert torch.count_nonzero(result.grads[0]) == 0
    assert overflowed > 0, "no K overflowed: the overflow path was not exercised"


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_overlapping_inputs_or_each_other_are_refused(device):
    base = torch.randn(3, 20, dtype=torch.float64, device=device)
    other = torch.randn(3, 6, dtype=torch.float64, device=device)
    grads = [base[:, :10], other]
    cases = {
        "out\\[0\\] overlaps grads\\[0\\]": [base[0, :10], torch.empty(6, dtype=torch.float64, device=device)],
        "out\\[0\\] overlaps grads\\[0\\] in memory": [base[1, :10], torch.empty(6, dtype=torch.float64, device=device)],
        "out\\[1\\] overlaps grads\\[1\\]": [torch.empty(10, dtype=torch.float64, device=device), other[2]],
    }
    # one element of overlap: out[0] ends where grads[1]'s buffer begins
    buffer = torch.randn(3 * 6 + 9, dtype=torch.float64, device=device)
    shared = [torch.randn(3, 10, dtype=torch.float64, device=device), buffer[9:].view(3, 6)]
    two_outputs = torch.empty(15, dtype=torch.float64, device=device)
    for pattern, out in cases.items():
        before = [g.clone() for g in grads]
        with pytest.raises(ValueError, match=pattern):
            ops.aggregate(grads, 0.25, out=out)
        assert all(torch.equal(b, g) for b, g in zip(before, grads))
    with pytest.raises(ValueError, match="out\\[0\\] overlaps grads\\[1\\]"):
        ops.aggregate(shared, 0.25, out=[buffer[:10], torch.empty(6, dtype=torch.float64, device=device)])
    with pytest.raises(ValueError, match="out\\[0\\] overlaps out\\[1\\]"):
        ops.aggregate(grads, 0.25, out=[two_outputs[:10], two_outputs[9:15]])
    with pytest.raises(ValueError, match="out\\[1\\] has elements that share memory"):
        ops.aggregate(grads, 0.25, out=[torch.empty(10, dtype=torch.float64, device=device),
                                        torch.zeros(1, dtype=torch.float64, device=device).expand(6)])
    with pytest.raises(ValueError, match="out\\[0\\] overlaps grads\\[0\\]"):
        ops.combine(grads, torch.ones(3, dtype=torch.float64, device=device), 0.2,
                    out=[base[2, 5:15], torch.empty(6, dtype=torch.float64, device=device)])
    # adjacent but disjoint memory is fine
    adjacent = torch.empty(16, dtype=torch.float64, device=device)
    result = ops.aggregate(grads, 0.25, out=[adjacent[:10], adjacent[10:]])
    for r, e in zip(result.grads, reference.aggregate(grads, 0.25).grads):
        torch.testing.assert_close(r, e)


RAW_OP_CASES = r"""
import json, sys, torch
import cg2a_ext.ops  # registers the fake kernels and autograd formulas

x = torch.randn(3, 4)
w = torch.ones(3)
meta = torch.randn(3, 4, device="meta")
out = [torch.empty(4)]
A = torch.ops.cg2a
cases = {
    # name: (call, expected message fragment)
    "gram meta among cpu": (lambda: A.gram([x, meta]), "grads[1] is on meta but grads[0] is on cpu"),
    "gram empty": (lambda: A.gram([]), "empty list"),
    "gram K above limit": (lambda: A.gram([torch.randn(33, 2)]), "exceeds the fused kernels' limit of 32"),
    "combine bad weights shape": (lambda: A.combine([x], torch.ones(2), 0.2, 0), "weights must have shape [K] = [3]"),
    "combine weights dtype": (lambda: A.combine([x], torch.ones(3, dtype=torch.float64), 0.2, 0), "weights have dtype torch.float64; expected torch.float32"),
    "combine nan weights": (lambda: A.combine([x], torch.tensor([1.0, float("nan"), 0.0]), 0.2, 0), "weights hold a non-finite value"),
    "combine inf weights": (lambda: A.combine([x], torch.tensor([1.0, float("inf"), 0.0]), 0.2, 0), "weights hold a non-finite value"),
    "combine meta weights": (lambda: A.combine([x], torch.ones(3, device="meta"), 0.2, 0), "weights are on meta but the gradients are on cpu"),
    "combine bad mask": (lambda: A.combine([x], w, 0.2, 7), "unknown mask mode 7"),
    "combine meta among cpu": (lambda: A.combine([x, meta], w, 0.2, 0), "grads[1] is on meta but grads[0] is on cpu"),
    "combine gamma nan": (lambda: A.combine([x], w, float("nan"), 0), "gamma = nan"),
    "combine gamma above 1": (lambda: A.combine([x], w, 1.5, 0), "gamma = 1.5"),
    "combine gamma below 0": (lambda: A.combine([x], w, -0.1, 0), "gamma = -0.1"),
    "combine_out bad weights shape": (lambda: A.combine_out([x], torch.ones(2), 0.2, 0, out), "weights must have shape [K] = [3]"),
    "combine_out nan weights": (lambda: A.combine_out([x], torch.tensor([1.0, float("nan"), 0.0]), 0.2, 0, out), "weights hold a non-finite value"),
    "combine_out meta weights": (lambda: A.combine_out([x], torch.ones(3, device="meta"), 0.2, 0, out), "weights are on meta"),
    "combine_out bad mask": (lambda: A.combine_out([x], w, 0.2, -1, out), "unknown mask mode -1"),
    "combine_out meta among cpu": (lambda: A.combine_out([x, meta], w, 0.2, 0, [torch.empty(4), torch.empty(4)]), "grads[1] is on meta but grads[0] is on cpu"),
    "combine_out meta out": (lambda: A.combine_out([x], w, 0.2, 0, [torch.empty(4, device="meta")]), "out[0] is on meta but grads[0] is on cpu"),
    "combine_out gamma nan": (lambda: A.combine_out([x], w, float("nan"), 0, out), "gamma = nan"),
    "combine_out out shape": (lambda: A.combine_out([x], w, 0.2, 0, [torch.empty(5)]), "out[0] has shape [5]"),
    "aggregate bad mask": (lambda: A.aggregate([x], 0.2, True, "sometimes", "raise"), "unknown mask 'sometimes'"),
    "aggregate bad policy": (lambda: A.aggregate([x], 0.2, True, "agree", "skip"), "unknown nonfinite policy 'skip'"),
    "aggregate meta among cpu": (lambda: A.aggregate([x, meta], 0.2, True, "agree", "raise"), "grads[1] is on meta but grads[0] is on cpu"),
    "aggregate gamma nan": (lambda: A.aggregate([x], float("nan"), True, "agree", "raise"), "gamma = nan"),
    "aggregate gamma inf": (lambda: A.aggregate([x], float("inf"), True, "agree", "raise"), "gamma = inf"),
    "aggregate nan input": (lambda: A.aggregate([torch.tensor([[float("nan")], [1.0]])], 0.2, True, "agree", "raise"), "non-finite input"),
    "aggregate_out bad mask": (lambda: A.aggregate_out([x], 0.2, True, "all", "raise", out), "unknown mask 'all'"),
    "aggregate_out meta among cpu": (lambda: A.aggregate_out([x, meta], 0.2, True, "agree", "zero", [torch.empty(4), torch.empty(4)]), "grads[1] is on meta but grads[0] is on cpu"),
    "aggregate_out meta out": (lambda: A.aggregate_out([x], 0.2, True, "agree", "zero", [torch.empty(4, device="meta")]), "out[0] is on meta but grads[0] is on cpu"),
    "aggregate_out gamma nan": (lambda: A.aggregate_out([x], float("nan"), False, "agree", "zero", out), "gamma = nan"),
    "aggregate_out out aliases input": (lambda: A.aggregate_out([x], 0.2, True, "agree", "zero", [x[1]]), "out[0] overlaps grads[0]"),
    "aggregate_out too few outputs": (lambda: A.aggregate_out([x, x], 0.2, True, "agree", "zero", out), "out has 1 tensors but grads has 2"),
    # the metadata-check ops the fake kernels call are raw ops too
    "gram_check meta among cpu": (lambda: A.gram_check([x, meta]), "grads[1] is on meta but grads[0] is on cpu"),
    "combine_check bad weights": (lambda: A.combine_check([x], torch.ones(2), 0.2, 0), "weights must have shape [K] = [3]"),
    "combine_check meta weights": (lambda: A.combine_check([x], torch.ones(3, device="meta"), 0.2, 0), "weights are on meta"),
    "combine_check bad mask": (lambda: A.combine_check([x], w, 0.2, 9), "unknown mask mode 9"),
    "combine_out_check gamma nan": (lambda: A.combine_out_check([x], w, float("nan"), 0, out), "gamma = nan"),
    "combine_out_check meta among cpu": (lambda: A.combine_out_check([x, meta], w, 0.2, 0, [torch.empty(4), torch.empty(4)]), "grads[1] is on meta"),
    "aggregate_check bad mask": (lambda: A.aggregate_check([x], 0.2, True, "none", "raise"), "unknown mask 'none'"),
    "aggregate_check meta among cpu": (lambda: A.aggregate_check([x, meta], 0.2, True, "agree", "raise"), "grads[1] is on meta"),
    "aggregate_out_check gamma nan": (lambda: A.aggregate_out_check([x], float("nan"), True, "agree", "raise", out), "gamma = nan"),
    "aggregate_out_check meta out": (lambda: A.aggregate_out_check([x], 0.2, True, "agree", "raise", [torch.empty(4, device="meta")]), "out[0] is on meta"),
}
for requires_grad in (False, True):
    # With requires_grad the call goes through the registered autograd formula first.
    if requires_grad:
        x.requires_grad_(True)
    for name, (call, fragment) in cases.items():
        print(json.dumps({"start": name, "requires_grad": requires_grad}), flush=True)
        try:
            call()
        except Exception as error:  # noqa: BLE001
            print(json.dumps({"name": name, "requires_grad": requires_grad, "type": type(error).__name__,
                              "ok": fragment in str(error), "message": str(error)[:300]}), flush=True)
        else:
            print(json.dumps({"name": name, "requires_grad": requires_grad, "type": None, "ok": False}), flush=True)
print("finished", flush=True)
"""


def test_every_raw_op_refuses_bad_input_without_crashing():
    """Every raw torch.ops.cg2a op, with bad weights, a bad mask, mixed devices,
    a meta tensor, bad gamma: each raises its message (ValueError or TypeError;
    the same message on both backends: the checks are shared C++), in eager
    mode and through the autograd formula. Run in a subprocess: a segfault
    shows as a failure naming the call that crashed."""
    run = subprocess.run([sys.executable, "-c", RAW_OP_CASES], capture_output=True, text=True, cwd=IMPORTED_FROM, timeout=300)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    started = [line for line in lines if "start" in line]
    assert run.returncode == 0 and "finished" in run.stdout, (
        f"the interpreter died (rc {run.returncode}) during {started[-1] if started else None}: {run.stderr[-2000:]}")
    results = [line for line in lines if "name" in line]
    assert len(results) == 2 * RAW_OP_CASES.count('": (lambda')
    bad = [r for r in results if not r["ok"] or r["type"] not in ("ValueError", "TypeError")]
    assert not bad, json.dumps(bad, indent=1)


def test_importing_the_library_imports_no_rl_code():
    script = textwrap.dedent("""
        import sys
        import cg2a_ext
        cg2a_ext.ops  # the compiled ops too
        cg2a_ext.CG2A(backend="fused")([__import__("torch").randn(2, 5)])
        loaded = sorted(m for m in sys.modules if m == "cg2a_ext.rl" or m.startswith(("cg2a_ext.rl.", "dm_control", "mujoco")))
        print(loaded)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=IMPORTED_FROM, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"importing cg2a_ext loaded: {run.stdout}"


@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), -0.1, 1.5, torch.tensor(1.5)])
@pytest.mark.parametrize("module", [ops, reference])
def test_gamma_outside_0_1_is_refused(module, gamma):
    grads = [torch.randn(2, 5)]
    with pytest.raises(ValueError, match=r"gamma = .*expected a finite value in \[0, 1\]"):
        module.aggregate(grads, gamma, nonfinite="raise")
    # as the fused op: without SGS gamma is not used, so not checked
    module.aggregate(grads, gamma, sgs=False)


@pytest.mark.parametrize("module", [ops, reference])
def test_out_that_requires_grad_is_refused(module):
    param = torch.nn.Parameter(torch.zeros(5))
    for grad_mode in (torch.enable_grad, torch.no_grad):
        with grad_mode(), pytest.raises(ValueError, match=r"out\[0\] requires grad.*pass the parameters' \.grad"):
            module.aggregate([torch.randn(2, 5)], 0.25, out=[param])
    assert param.abs().sum().item() == 0.0
    weights = torch.full((2,), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"out\[0\] requires grad"):
        module.combine([torch.randn(2, 5)], weights, 0.25, out=[param])
