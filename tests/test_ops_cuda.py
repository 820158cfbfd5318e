"""CUDA properties of the one-op aggregate: at most five kernel launches, no
host synchronisation with nonfinite="zero", CUDA graph capture and replay,
torch.compile(fullgraph=True). (Correctness against the reference on CUDA is
in test_ops.py and test_ops_refusals.py, parametrized over devices.)"""
from __future__ import annotations

import pytest
import torch

from cg2a_ext import has_cuda_kernels, ops, reference

pytestmark = [pytest.mark.cuda,  # conftest skips these without a device
              pytest.mark.skipif(not has_cuda_kernels(), reason="cg2a_ext built without its CUDA kernels")]


def cuda_grads(k: int = 4, sizes=(1000, 37, 4096, 5), dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(k, n, generator=gen).to("cuda", dtype) for n in sizes]


@pytest.mark.parametrize("nonfinite", ["zero", "raise"])
def test_at_most_five_kernel_launches(nonfinite):
    grads = cuda_grads()
    out = [torch.empty(g.shape[1:], device="cuda") for g in grads]
    ops.aggregate(grads, 0.25, out=out, nonfinite=nonfinite)  # warm-up
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        ops.aggregate(grads, 0.25, out=out, nonfinite=nonfinite)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    assert 1 <= len(kernels) <= 5, [e.name for e in kernels]


def test_no_host_sync_with_nonfinite_zero():
    grads = cuda_grads()
    out = [torch.empty(g.shape[1:], device="cuda") for g in grads]
    ops.aggregate(grads, 0.25, out=out, nonfinite="zero")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = ops.aggregate(grads, 0.25, out=out, nonfinite="zero")
        functional = ops.aggregate(grads, 0.25, nonfinite="zero")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = reference.aggregate([g.double() for g in grads], 0.25)
    for o, f, e in zip(out, functional.grads, expected.grads):
        torch.testing.assert_close(o.double(), e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(f, o)
    assert not bool(result.zeroed)


def test_cuda_graph_capture_and_replay():
    static = cuda_grads()
    out = [torch.empty(g.shape[1:], device="cuda") for g in static]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.aggregate(static, 0.25, out=out, nonfinite="zero")  # warm-up off the default stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.aggregate(static, 0.25, out=out, nonfinite="zero")
    for seed in (1, 2, 3):
        fresh = cuda_grads(seed=seed)
        fresh[1][2, 3] = float("nan") if seed == 3 else fresh[1][2, 3]
        for s, f in zip(static, fresh):
            s.copy_(f)
        graph.replay()
        expected = reference.aggregate([g.double() for g in fresh], 0.25, nonfinite="zero")
        for o, e in zip(out, expected.grads):
            torch.testing.assert_close(o.double(), e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(captured.weights, expected.weights.cuda(), rtol=1e-6, atol=1e-9)
        assert bool(captured.nonfinite) == (seed == 3)


def test_raise_policy_is_refused_under_capture():
    static = cuda_grads()
    out = [torch.empty(g.shape[1:], device="cuda") for g in static]
    ops.aggregate(static, 0.25, out=out, nonfinite="zero")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="nonfinite='raise' reads one flag back"):
        with torch.cuda.graph(graph):
            ops.aggregate(static, 0.25, out=out, nonfinite="raise")


def test_torch_compile_fullgraph_on_cuda():
    grads = cuda_grads()
    out = [torch.empty(g.shape[1:], device="cuda") for g in grads]

    @torch.compile(fullgraph=True)
    def step(grads, out):
        result = ops.aggregate(grads, 0.25, out=out, nonfinite="zero")
        return result.weights, result.zeroed

    weights, zeroed = step(grads, out)
    expected = reference.aggregate([g.double() for g in grads], 0.25)
    torch.testing.assert_close(weights.cpu(), expected.weights, rtol=1e-6, atol=1e-9)
    assert not bool(zeroed)
