"""The K per-loss gradients of losses that each depend on their own group of
inputs (e.g. the clean and augmented copies of a batch), stacked [K, *shape]
per parameter.

Three exact methods:
* "vmap": one batched backward (torch.func.vmap over grad): the K groups run
  as one K*B batch.
* "loop": K forward/backward passes of B samples each. Usually faster than
  vmap on CPUs: under vmap the per-group weight gradients of convolutions
  become grouped convolutions, which oneDNN runs slowly (BENCHMARKS.md).
* "split": one forward and one backward over the K*B batch, with only the
  weight-gradient step of each layer done per group (`_split_grads`). For
  networks of Linear, Conv2d and LayerNorm layers whose samples do not
  interact; refused with the reason otherwise.
"auto" measures the methods the model supports once per device and model
signature (parameter and input shapes, dtypes and layouts, the loss function)
and keeps the fastest; a model that vmap cannot run gets "loop". Before
"split" can be chosen its gradients must agree with the loop's on that first
call (a guard against a model that mixes samples in a way no layer type
shows). The methods agree to rounding, not bit for bit, so a run that must be
bit-reproducible across machines names one.

Memory formats under vmap. vmap supports only contiguous and preserved
memory formats; a model that asks for another (e.g. channels-last
convolution inputs: `x.contiguous(memory_format=torch.channels_last)`) would
fail inside vmap. A memory format never changes values, so inside the vmap
method such requests are served as plain contiguous ones (see
`_ContiguousInsideVmap`); the model runs unchanged under "loop"."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.overrides import TorchFunctionMode

from cg2a_ext._split_grads import SplitUnsupported, split_grads, unsupported_reason

METHODS = ("auto", "vmap", "loop", "split")

_NATIVE_FORMATS = (torch.contiguous_format, torch.preserve_format)


class _ContiguousInsideVmap(TorchFunctionMode):
    """Serves memory-format requests vmap does not support (channels-last) as
    contiguous ones: `.contiguous(memory_format=f)` becomes `.contiguous()`,
    a `memory_format=f` keyword elsewhere (`to`, `clone`, `*_like`) becomes
    `torch.preserve_format`. Layout only: the values are the same."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is Tensor.contiguous:
            if len(args) > 1:
                args = args[:1]
            kwargs.pop("memory_format", None)
        elif kwargs.get("memory_format") not in (None, *_NATIVE_FORMATS):
            kwargs["memory_format"] = torch.preserve_format
        return func(*args, **kwargs)


# Method chosen by "auto", per (device, model signature).
_AUTO_CHOICE: dict[tuple, str] = {}


def per_group_grads(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    group_inputs: Sequence[Tensor],
    shared_inputs: Sequence[object] = (),
    params: Sequence[nn.Parameter] | None = None,
    method: str = "auto",
) -> tuple[list[Tensor], Tensor]:
    """Per-group gradients of `loss_fn`, stacked on a leading K dim.

    Args:
        module: the network whose parameters are differentiated.
        loss_fn: loss_fn(model, *group_inputs_k, *shared_inputs) -> scalar loss of
            ONE group; `model` has module.forward's signature and runs `module`
            functionally.
        group_inputs: tensors with a leading dim K (group k gets input[k]).
        shared_inputs: values passed unchanged to every group (targets, actions).
        params: the parameters to differentiate (default: every parameter with
            requires_grad, in module.parameters() order); the others are constants.
        method: "vmap" (one batched backward), "loop" (K backward passes),
            "split" (one backward, per-group weight-gradient steps) or "auto"
            (the fastest the model supports, measured once per device and
            model signature); all give the same gradients (to rounding).

    Returns:
        (grads, losses): grads[t] has shape [K, *params[t].shape]; losses [K],
        detached.
    """
    if method not in METHODS:
        raise ValueError(f"per_group_grads: unknown method {method!r}; expected one of {METHODS}")
    group_inputs = tuple(group_inputs)
    if not group_inputs:
        raise ValueError("per_group_grads: group_inputs is empty; pass tensors with a leading group dim K")
    k = group_inputs[0].shape[0]
    for i, x in enumerate(group_inputs):
        if x.dim() < 1 or x.shape[0] != k:
            raise ValueError(f"per_group_grads: group_inputs[{i}] has leading dim {tuple(x.shape[:1])}, expected K = {k}")
    named = dict(module.named_parameters())
    names = _param_names(module, params)
    shared_inputs = tuple(shared_inputs)
    if method == "auto":
        return _auto(module, loss_fn, group_inputs, shared_inputs, names)
    if method == "loop":
        return _loop(module, loss_fn, group_inputs, shared_inputs, [named[n] for n in names])
    if method == "split":
        return _split(module, loss_fn, group_inputs, shared_inputs, names)
    return _vmap(module, loss_fn, group_inputs, shared_inputs, names)


def _param_names(module: nn.Module, params: Sequence[nn.Parameter] | None) -> list[str]:
    named = dict(module.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        by_id = {id(p): n for n, p in named.items()}
        missing = [i for i, p in enumerate(params) if id(p) not in by_id]
        if missing:
            raise ValueError(f"per_group_grads: params{missing} are not parameters of the module")
        names = [by_id[id(p)] for p in params]
    if not names:
        raise ValueError("per_group_grads: no parameter to differentiate (none requires grad)")
    return names


def auto_method(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    group_inputs: Sequence[Tensor],
    shared_inputs: Sequence[object] = (),
    params: Sequence[nn.Parameter] | None = None,
) -> str | None:
    """The method ("vmap" or "loop") that "auto" chose in this process for these arguments' device and
    model signature; None before its first "auto" call with them. The two methods can differ in the
    last bits, so a run that must give the same numbers after a restart records this choice and passes
    it as ``method`` from then on (the timing behind "auto" can differ between processes)."""
    names = _param_names(module, params)
    return _AUTO_CHOICE.get(_signature(module, loss_fn, tuple(group_inputs), tuple(shared_inputs), names))


def _vmap(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    group_inputs: tuple[Tensor, ...],
    shared_inputs: tuple[object, ...],
    names: list[str],
) -> tuple[list[Tensor], Tensor]:
    """One batched backward: vmap over grad_and_value of one group's loss."""
    named = dict(module.named_parameters())
    variables = {n: named[n].detach() for n in names}
    constants = {n: p.detach() for n, p in named.items() if n not in variables}
    constants.update(dict(module.named_buffers()))

    def group_loss(variables: dict[str, Tensor], *args: object) -> Tensor:
        def model(*model_args: object, **model_kwargs: object) -> object:
            return functional_call(module, (variables, constants), model_args, model_kwargs)

        return loss_fn(model, *args)

    in_dims = (None,) + (0,) * len(group_inputs) + (None,) * len(shared_inputs)
    with _ContiguousInsideVmap():
        grads, losses = vmap(grad_and_value(group_loss), in_dims=in_dims)(variables, *group_inputs, *shared_inputs)
    return [grads[n] for n in names], losses.detach()


def _signature(module: nn.Module, loss_fn: Callable, group_inputs, shared_inputs, names) -> tuple:
    """What the methods' speed, and whether split can run, depend on."""
    def describe(x: object) -> object:
        if isinstance(x, Tensor):
            return (tuple(x.shape), x.dtype, x.stride(), str(x.device))
        return type(x).__name__

    named = dict(module.named_parameters())
    return (
        str(group_inputs[0].device), type(module).__qualname__, getattr(loss_fn, "__qualname__", repr(loss_fn)),
        unsupported_reason(module, names),     # e.g. a compiled twin of a model measured eagerly
        tuple((n, *describe(named[n])) for n in names),
        tuple(describe(x) for x in group_inputs), tuple(describe(x) for x in shared_inputs),
    )


def _timed(fn: Callable[[], tuple[list[Tensor], Tensor]], device: torch.device):
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up: first-call costs (kernels chosen, caches filled)
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


# "auto" keeps "split" only if its first result is this close to the loop's (relative, over all
# gradients): loose enough for bfloat16 autocast, far below what mixing samples would do.
SPLIT_AGREEMENT_RTOL = 1e-2


def _agree(a: tuple[list[Tensor], Tensor], b: tuple[list[Tensor], Tensor], rtol: float) -> bool:
    """Whether gradients and losses ``a`` equal ``b`` to ``rtol`` relative to ``b``'s norm."""
    def flat(result):
        grads, losses = result
        return torch.cat([g.reshape(-1).double() for g in grads]), losses.double()

    (ga, la), (gb, lb) = flat(a), flat(b)
    return bool(torch.linalg.vector_norm(ga - gb) <= rtol * torch.linalg.vector_norm(gb)
                and torch.linalg.vector_norm(la - lb) <= rtol * torch.linalg.vector_norm(lb))


def _auto(module, loss_fn, group_inputs, shared_inputs, names) -> tuple[list[Tensor], Tensor]:
    """The method measured fastest for this device and model signature."""
    key = _signature(module, loss_fn, group_inputs, shared_inputs, names)
    named = dict(module.named_parameters())
    params = [named[n] for n in names]
    device = group_inputs[0].device
    methods = {
        "loop": lambda: _loop(module, loss_fn, group_inputs, shared_inputs, params),
        "vmap": lambda: _vmap(module, loss_fn, group_inputs, shared_inputs, names),
        "split": lambda: _split(module, loss_fn, group_inputs, shared_inputs, names),
    }
    choice = _AUTO_CHOICE.get(key)
    if choice is not None:
        return methods[choice]()
    loop_seconds, loop_result = _timed(methods["loop"], device)
    timings = {"loop": (loop_seconds, loop_result)}
    try:
        timings["vmap"] = _timed(methods["vmap"], device)
    except RuntimeError:
        pass    # an op without a batching rule: vmap cannot run this model
    try:
        split_seconds, split_result = _timed(methods["split"], device)
    except SplitUnsupported:
        pass    # split names why in its error; auto only needs to know it cannot run
    else:
        if _agree(split_result, loop_result, SPLIT_AGREEMENT_RTOL):
            timings["split"] = (split_seconds, split_result)
    best = min(timings, key=lambda m: timings[m][0])
    _AUTO_CHOICE[key] = best
    return timings[best][1]


def _split(module, loss_fn, group_inputs, shared_inputs, names) -> tuple[list[Tensor], Tensor]:
    try:
        return split_grads(module, loss_fn, group_inputs, shared_inputs, names)
    except SplitUnsupported as error:
        raise SplitUnsupported(f"per_group_grads: method 'split' cannot compute these gradients: {error}") from None


def _loop(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    group_inputs: tuple[Tensor, ...],
    shared_inputs: tuple[object, ...],
    params: list[nn.Parameter],
) -> tuple[list[Tensor], Tensor]:
    """K forward/backward passes; gradients written straight into [K, *shape]."""
    k = group_inputs[0].shape[0]
    grads = [p.new_empty((k, *p.shape)) for p in params]
    losses = []
    for i in range(k):
        loss = loss_fn(module, *(x[i] for x in group_inputs), *shared_inputs)
        for stacked, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is None:
                stacked[i].zero_()
            else:
                stacked[i].copy_(g)
        losses.append(loss.detach())
    return grads, torch.stack(losses)
