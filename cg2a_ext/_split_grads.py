"""per_group_grads' "split" method: one forward and one backward over the K*B batch, with only the
weight-gradient step done per group.

For a network whose samples do not interact (no batch statistics), the gradient of
sum_k loss_k with respect to a layer's output holds, in the rows of group k, exactly the gradient
of loss_k. So one data-gradient backward over the concatenated batch serves all K losses, and each
group's parameter gradient is the layer's weight-gradient step restricted to that group's rows:

* ``nn.Linear``:    dW_k = G_k^T X_k (one batched matmul over k), db_k = sum of G_k's rows;
* ``nn.Conv2d``:    dW_k, db_k = the convolution's weight-gradient kernel on (X_k, G_k), once per k;
* ``nn.LayerNorm``: dW_k = sum of G_k * normalize(X_k), db_k = sum of G_k.

X is the layer's input and G the gradient of its output, both captured by hooks (the data-gradient
backward asks autograd for the layer outputs' gradients only, so no parameter gradient is formed).
The FLOPs equal K separate backward passes; the gain is running the data path as one batch (on a
GPU, one 13 ms backward instead of 22-29 ms for the other methods at the paper's critic).

The model is called through a stand-in: ``loss_fn`` runs once per group to see the model's
arguments, which are concatenated over groups (tensors along dim 0; other values must be equal);
the module runs once on them; ``loss_fn`` runs again per group on its slice of the outputs, and
must call the model on the same objects as the first time (a loss that draws or copies its
inputs itself is refused).
:func:`unsupported_reason` says when this cannot be done right; ``per_group_grads`` then refuses
"split" and "auto" leaves it out.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

# Exact types only: a subclass may change what forward computes.
_SUPPORTED = (nn.Linear, nn.Conv2d, nn.LayerNorm)


class SplitUnsupported(ValueError):
    """The split method cannot compute these gradients exactly; the message says why."""


class _ModelCalled(BaseException):
    """Raised by the recording stand-in to stop ``loss_fn`` once the model's arguments are known (a
    BaseException so that a loss function's own ``except Exception`` does not swallow it)."""


def _owners(module: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Module path -> layer for every layer that owns one of ``names``."""
    owners: dict[str, nn.Module] = {}
    for name in names:
        path, _, leaf = name.rpartition(".")
        owners[path] = module.get_submodule(path) if path else module
    return owners


def _custom(layer: nn.Module) -> bool:
    """A layer that forms its own per-group gradients: ``split_weight_grads(x, g, k, want) -> {name: [K, *shape]}``
    from its input and its output's gradient over the K*B rows (e.g. the RL critic's stacked twin Q layers)."""
    return callable(getattr(type(layer), "split_weight_grads", None))


def unsupported_reason(module: nn.Module, names: Sequence[str]) -> str | None:
    """Why "split" cannot differentiate ``names`` of ``module`` exactly, or None when it can."""
    for sub_name, sub in module.named_modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            return f"submodule {sub_name or '<root>'!r} is compiled (hooks on its layers would not run)"
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
            return f"submodule {sub_name!r} ({type(sub).__name__}) mixes the samples of a batch in training mode"
    for path, owner in _owners(module, names).items():
        if type(owner) not in _SUPPORTED and not _custom(owner):
            return (f"parameters of {path or '<root>'!r} ({type(owner).__name__}): split handles "
                    f"{', '.join(t.__name__ for t in _SUPPORTED)} layers only")
        if isinstance(owner, nn.Conv2d) and (owner.padding_mode != "zeros" or isinstance(owner.padding, str)):
            return f"{path!r}: split handles zero, integer padding only"
    for name in names:
        if name.rpartition(".")[2] not in ("weight", "bias"):
            return f"parameter {name!r} is not a layer's weight or bias"
    return None


def _merge(values: list, what: str, slices: list[tuple[Tensor, list[Tensor]]]):
    """One argument of the model, over the K groups: tensors concatenated along dim 0, other values equal.
    When the K values are the K slices ``x[k]`` of one group input, that input itself serves, flattened
    (a view when it can be: no copy of the largest tensor of the call)."""
    first = values[0]
    for group_input, group_slices in slices:
        if all(v is s for v, s in zip(values, group_slices)):
            return group_input.flatten(0, 1)
    if isinstance(first, Tensor):
        if not all(isinstance(v, Tensor) and v.shape == first.shape and v.dtype == first.dtype
                   and v.device == first.device for v in values):
            raise SplitUnsupported(f"the model's argument {what} differs in type, shape or dtype between groups")
        if first.dim() == 0:
            raise SplitUnsupported(f"the model's argument {what} is a 0-d tensor (no batch dim to concatenate)")
        return torch.cat(values)
    if any(isinstance(v, Tensor) for v in values) or not all(v is first or v == first for v in values):
        raise SplitUnsupported(f"the model's argument {what} is not a tensor and differs between groups")
    return first


def _same_call(call: tuple[tuple, dict], recorded: tuple[tuple, dict]) -> bool:
    """Whether the model got the same arguments as when recorded: the very same tensors (no value is read:
    comparing values would make the host wait for the device), equal other values."""
    (args, kwargs), (args0, kwargs0) = call, recorded
    if len(args) != len(args0) or kwargs.keys() != kwargs0.keys():
        return False
    pairs = list(zip(args, args0)) + [(kwargs[key], kwargs0[key]) for key in kwargs]
    return all(a is b if isinstance(a, Tensor) or isinstance(b, Tensor) else a is b or a == b for a, b in pairs)


def _batch_size(args: tuple, kwargs: dict) -> int:
    sizes = {x.shape[0] for x in tree_flatten((args, kwargs))[0] if isinstance(x, Tensor)}
    if len(sizes) != 1:
        raise SplitUnsupported(f"the model's tensor arguments must share one batch size, got {sorted(sizes)}")
    return sizes.pop()


def _weight_grads(layer: nn.Module, x: Tensor, g: Tensor, k: int, want: set[str]) -> dict[str, Tensor]:
    """Per-group gradients [K, *shape] of ``layer``'s parameters in ``want``, from its input ``x`` and the
    gradient ``g`` of its output (both over the K*B batch), in the dtype the layer computed in."""
    dtype = g.dtype   # under autocast, the dtype of the layer's output: its compute dtype
    out: dict[str, Tensor] = {}
    if _custom(layer):
        return layer.split_weight_grads(x, g, k, want)
    if isinstance(layer, nn.Linear):
        x3, g3 = x.to(dtype).reshape(k, -1, x.shape[-1]), g.reshape(k, -1, g.shape[-1])
        if "weight" in want:
            out["weight"] = torch.bmm(g3.transpose(1, 2), x3)
        if "bias" in want:
            out["bias"] = g3.sum(1)
    elif isinstance(layer, nn.Conv2d):
        if x.dim() != 4:
            raise SplitUnsupported(f"a Conv2d got a {x.dim()}-d input; split needs batched [N, C, H, W] inputs")
        b = x.shape[0] // k
        weight = layer.weight.detach().to(dtype)
        mask = [False, "weight" in want, "bias" in want]
        parts = [torch.ops.aten.convolution_backward(
            g[i * b:(i + 1) * b], x[i * b:(i + 1) * b].to(dtype), weight,
            [layer.out_channels] if mask[2] else None, list(layer.stride), list(layer.padding),
            list(layer.dilation), False, [0, 0], layer.groups, mask) for i in range(k)]
        if mask[1]:
            out["weight"] = torch.stack([p[1] for p in parts])
        if mask[2]:
            out["bias"] = torch.stack([p[2] for p in parts])
    else:  # nn.LayerNorm
        shape = tuple(layer.normalized_shape)
        g3 = g.reshape(k, -1, *shape)
        if "weight" in want:
            normalized = F.layer_norm(x.to(dtype), shape, None, None, layer.eps)
            out["weight"] = (g3 * normalized.reshape(k, -1, *shape)).sum(1)
        if "bias" in want:
            out["bias"] = g3.sum(1)
    return out


def split_grads(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    group_inputs: tuple[Tensor, ...],
    shared_inputs: tuple[object, ...],
    names: list[str],
) -> tuple[list[Tensor], Tensor]:
    """The split method (see the module docstring); raises :class:`SplitUnsupported` with the reason
    when it cannot compute these gradients exactly."""
    reason = unsupported_reason(module, names)
    if reason:
        raise SplitUnsupported(reason)
    k = group_inputs[0].shape[0]

    # 1. The model's arguments for each group.
    calls: list[tuple[tuple, dict]] = []

    def recording_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise _ModelCalled

    slices = [(x, [x[i] for i in range(k)]) for x in group_inputs]
    for i in range(k):
        try:
            loss_fn(recording_model, *(s[i] for _, s in slices), *shared_inputs)
        except _ModelCalled:
            pass
        if len(calls) != i + 1:
            raise SplitUnsupported("loss_fn returned without calling the model")
    batch = _batch_size(*calls[0])
    args = tuple(_merge([c[0][j] for c in calls], f"#{j}", slices) for j in range(len(calls[0][0])))
    if any(c[1].keys() != calls[0][1].keys() or len(c[0]) != len(args) for c in calls):
        raise SplitUnsupported("loss_fn calls the model with different arguments for different groups")
    kwargs = {key: _merge([c[1][key] for c in calls], repr(key), slices) for key in calls[0][1]}

    # 2. One forward over the K*B batch, capturing each layer's input and output.
    owners = _owners(module, names)
    path_of = {id(layer): path for path, layer in owners.items()}
    captured: list[tuple[nn.Module, Tensor, Tensor, int, int]] = []

    def capture(layer, inputs, output):
        captured.append((layer, inputs[0], output, inputs[0]._version, output._version))

    handles = [layer.register_forward_hook(capture) for layer in owners.values()]
    try:
        with torch.enable_grad():
            outputs = module(*args, **kwargs)
    except RuntimeError as error:
        raise SplitUnsupported(f"the model failed on the groups' arguments concatenated along dim 0: {error}") from error
    finally:
        for handle in handles:
            handle.remove()

    pieces: dict[int, tuple[Tensor, ...]] = {}

    def group_slice(i: int):
        def take(x):
            if isinstance(x, Tensor):
                if x.dim() == 0 or x.shape[0] != k * batch:
                    raise SplitUnsupported(f"a model output has leading dim {tuple(x.shape[:1])}, expected "
                                           f"K * B = {k * batch}")
                if id(x) not in pieces:
                    # one unbind per output: its backward stacks the K groups' gradients in one op, where K
                    # slices would each pad theirs with zeros and add them up one by one (the same values)
                    pieces[id(x)] = x.unflatten(0, (k, batch)).unbind(0)
                return pieces[id(x)][i]
            return x
        return tree_map(take, outputs)

    # 3. Each group's loss on its slice of the outputs.
    losses = []
    for i in range(k):
        served = []

        def replaying_model(*_args, _i=i, _served=served, **_kwargs):
            if _served:
                raise SplitUnsupported("loss_fn calls the model more than once per group")
            _served.append(True)
            if not _same_call((_args, _kwargs), calls[_i]):
                raise SplitUnsupported("loss_fn called the model with other arguments the second time; split runs "
                                       "loss_fn twice per group and needs the model called on the same objects "
                                       "(no fresh random draws or copies inside loss_fn)")
            return group_slice(_i)

        losses.append(loss_fn(replaying_model, *(s[i] for _, s in slices), *shared_inputs))
    for layer, x, y, x_version, y_version in captured:
        if x._version != x_version or y._version != y_version:
            raise SplitUnsupported(f"{type(layer).__name__} {path_of[id(layer)]!r}: its input or output was "
                                   f"modified in place")

    # 4. One data-gradient backward: the gradients of the layer outputs only.
    total = torch.stack(losses).sum()
    output_grads = torch.autograd.grad(total, [c[2] for c in captured], allow_unused=True)

    # 5. Each group's weight-gradient step.
    named = dict(module.named_parameters())
    wanted: dict[str, set[str]] = {}
    for name in names:
        path, _, leaf = name.rpartition(".")
        wanted.setdefault(path, set()).add(leaf)
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    for (layer, x, _, _, _), g in zip(captured, output_grads):
        if g is None:
            continue
        path = path_of[id(layer)]
        for leaf, value in _weight_grads(layer, x.detach(), g, k, wanted[path]).items():
            parts[f"{path}.{leaf}" if path else leaf].append(value)
    grads = []
    for name in names:
        p = named[name]
        if not parts[name]:          # the layer was not called, or its output did not reach the losses
            grads.append(torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device))
            continue
        total_grad = parts[name][0] if len(parts[name]) == 1 else torch.stack(parts[name]).sum(0)
        # a layer called once (the usual case) costs no extra op here: no zero fill, no accumulation
        grads.append(total_grad.to(p.dtype).contiguous())
    return grads, torch.stack([loss.detach() for loss in losses])
