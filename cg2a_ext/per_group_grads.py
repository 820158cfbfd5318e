"""The K per-loss gradients of losses that each depend on their own group of
inputs (e.g. the clean and augmented copies of a batch), stacked [K, *shape]
per parameter.

Two exact methods:
* "vmap": one batched backward (torch.func.vmap over grad): the K groups run
  as one K*B batch. The fast choice on GPUs.
* "loop": K forward/backward passes of B samples each. On CPUs it is the
  faster one: under vmap the per-group weight gradients of convolutions
  become grouped convolutions, which oneDNN runs slowly (BENCHMARKS.md).
"auto" picks "vmap" for CUDA inputs and "loop" otherwise."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

METHODS = ("auto", "vmap", "loop")


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
        method: "vmap" (one batched backward), "loop" (K backward passes) or
            "auto" (vmap on CUDA, loop elsewhere); all give the same gradients.

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
    if method == "auto":
        method = "vmap" if group_inputs[0].is_cuda else "loop"
    if method == "loop":
        return _loop(module, loss_fn, group_inputs, tuple(shared_inputs), [named[n] for n in names])
    variables = {n: named[n].detach() for n in names}
    constants = {n: p.detach() for n, p in named.items() if n not in variables}
    constants.update(dict(module.named_buffers()))

    def group_loss(variables: dict[str, Tensor], *args: object) -> Tensor:
        def model(*model_args: object, **model_kwargs: object) -> object:
            return functional_call(module, (variables, constants), model_args, model_kwargs)

        return loss_fn(model, *args)

    in_dims = (None,) + (0,) * len(group_inputs) + (None,) * len(shared_inputs)
    grads, losses = vmap(grad_and_value(group_loss), in_dims=in_dims)(variables, *group_inputs, *shared_inputs)
    return [grads[n] for n in names], losses.detach()


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
