"""Per-sample output Jacobians at a scale, computed from their factors.

A *scale* ``S`` is the whole network, one layer ``l`` (``W_l, b_l``) or
one neuron ``alpha`` of layer ``l`` (row ``alpha`` of ``W_l`` and ``b_l[alpha]``; for a
conv layer output channel ``alpha``'s filter and bias, shared over positions). The
parameters of a layer are laid out neuron by neuron, ``[W_l[alpha].flatten(), b_l[alpha]]``,
so a layer's ``theta_S`` is a ``(C, Q)`` matrix (``Q`` = fan-in + 1) flattened row-major.

Within one activation pattern each layer enters the output linearly, so

    J^n_l(x) = J^L_l(x) outer x~_{l-1}      (dense; the paper's Jacobian tensor G_l)
    J^n_l(x) = sum_p J^L_l(x)[:, :, p] outer U~_p   (conv; U~ = unfolded patches and a 1)

with ``J^L_l = d f / d a_l`` the output-by-pre-activation Jacobian. It is computed in
forward mode (one tangent per pre-activation unit of the scale, ``jvp`` batched with
``vmap`` over the tangents and the samples at once) when the scale has fewer units than
the network has outputs (the autoencoder), and in reverse mode otherwise (the
classifier): one hand-written backward sweep, :func:`reverse_sweep`, carrying all ``K``
cotangents through the clamped tail at once. Shapes: ``N`` batch, ``K`` outputs,
``C`` neurons of the scale, ``Q`` parameters per neuron, ``P`` parameters of the scale.

Per-layer rules live in :data:`RULES`, keyed by module class (as in Opacus and
BackPACK); :func:`reference_jacobian` is the slow, obviously correct per-sample
``autograd.grad`` loop and :func:`jacrev_jacobian` the ``torch.func.jacrev`` one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from ..runs.models import ReluNet, Trace


@dataclass(frozen=True)
class Scale:
    """The coordinates ``S`` of ``theta``: the network (``layer=None``), a layer, or one neuron.

    Args:
        layer: weight layer counted from 1, or ``None`` for the whole network.
        neuron: output unit (conv: output channel) of ``layer``, or ``None`` for the whole layer.
    """

    layer: int | None = None
    neuron: int | None = None

    def __post_init__(self) -> None:
        if self.layer is None and self.neuron is not None:
            raise ValueError("a neuron scale needs its layer")

    @property
    def label(self) -> str:
        if self.layer is None:
            return "network"
        return f"layer{self.layer}" if self.neuron is None else f"layer{self.layer}/neuron{self.neuron}"

    def blocks(self, model: ReluNet) -> list[tuple[int, list[int]]]:
        """``[(layer, neurons), ...]``: the scale as neuron lists per layer, in parameter order."""
        if self.layer is None:
            return [(l, list(range(neuron_count(model, l)))) for l in range(1, model.depth + 1)]
        model.layer(self.layer)  # raises for a layer that does not exist
        if self.neuron is None:
            return [(self.layer, list(range(neuron_count(model, self.layer))))]
        if not 0 <= self.neuron < neuron_count(model, self.layer):
            raise IndexError(f"layer {self.layer} has no neuron {self.neuron}")
        return [(self.layer, [self.neuron])]


def neuron_count(model: ReluNet, l: int) -> int:
    layer = model.layer(l)
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def layer_matrix(layer: nn.Module) -> torch.Tensor:
    """A layer's parameters as the ``(C, Q)`` matrix ``[W.flatten(1), b]``."""
    return torch.cat([layer.weight.flatten(1), layer.bias[:, None]], dim=1)


def scale_vector(model: ReluNet, scale: Scale) -> torch.Tensor:
    """``theta_S``: ``(P,)``, the scale's weights and biases in the module's layout."""
    return torch.cat([layer_matrix(model.layer(l))[idx].flatten() for l, idx in scale.blocks(model)])


def scale_parameters(
    model: ReluNet, scale: Scale, v: torch.Tensor, base: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Parameters for ``torch.func.functional_call`` with ``theta_S := v``, the rest at ``base``
    (default: the module's)."""
    params = dict(model.named_parameters()) if base is None else dict(base)
    offset = 0
    for l, idx in scale.blocks(model):
        name = f"layers.{l - 1}"
        weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
        q = weight[0].numel() + 1
        block = v[offset : offset + len(idx) * q].view(len(idx), q)
        offset += len(idx) * q
        index = torch.as_tensor(idx, device=v.device)
        params[f"{name}.weight"] = weight.index_copy(0, index, block[:, :-1].reshape(-1, *weight.shape[1:]))
        params[f"{name}.bias"] = bias.index_copy(0, index, block[:, -1])
    if offset != v.numel():
        raise ValueError(f"v has {v.numel()} entries; scale {scale.label} has {offset}")
    return params


def clamped_tail(model: ReluNet, l: int, trace: Trace) -> Callable[[torch.Tensor], torch.Tensor]:
    """``a_l -> f`` with every ReLU mask and pool switch at ``trace``'s values (affine in ``a_l``)."""
    last = model.depth - 1

    def tail(a: torch.Tensor) -> torch.Tensor:
        x = a
        for i in range(l - 1, model.depth):
            if i > l - 1:
                x = model.layers[i](model._input_of(i, x))
            if i == last:
                return x
            x = x * (trace.pre[i] > 0).to(x.dtype)
            index = trace.pool_indices[i]
            if index is not None:
                x = x.flatten(2).gather(2, index.flatten(2)).view_as(index)
        raise AssertionError("unreachable")

    return tail


def _transpose_layer(layer: nn.Module, g: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """``g (N, K, *out) -> g (N, K, *in)``: the layer's linear part transposed, for ``K`` cotangents per sample."""
    n, k = g.shape[:2]
    if isinstance(layer, nn.Linear):
        return g @ layer.weight
    if isinstance(layer, nn.Conv2d):
        flat = torch.nn.grad.conv2d_input(
            (n * k, *input_shape[1:]), layer.weight, g.flatten(0, 1),
            layer.stride, layer.padding, layer.dilation, layer.groups)
        return flat.view(n, k, *input_shape[1:])
    raise TypeError(f"no transpose for {type(layer).__name__}; the reverse sweep knows Linear and Conv2d")


def reverse_sweep(model: ReluNet, trace: Trace, l: int) -> torch.Tensor:
    """``J^L_l`` for every unit of layer ``l``: ``(N, K, C, ...)``, the rows of the clamped tail's Jacobian.

    One hand-written backward sweep carrying all ``K`` cotangents at once (the rows of the
    identity at the output), with every mask and pool switch at ``trace``'s values: the
    transpose of :func:`clamped_tail`. Unlike ``vmap`` over ``vjp`` it neither replays the
    tail forward nor materialises the identity: the last dense layer's rows are the start.
    """
    last = model.depth - 1
    n, k = trace.output.shape[:2]
    if l - 1 == last:  # the output layer: J^L_L is the identity
        eye = torch.eye(k, dtype=trace.output.dtype, device=trace.output.device)
        return eye.view(1, k, *trace.output.shape[1:]).expand(n, k, *trace.output.shape[1:]).contiguous()
    layer = model.layers[last]
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"the reverse sweep needs a dense output layer (outputs (N, K)); got {type(layer).__name__}")
    g = layer.weight[None].expand(n, k, layer.in_features)  # the identity's rows pulled through W_L
    for i in range(last - 1, l - 2, -1):
        # g is the cotangent of layer i's output after its ReLU and pool, flattened if a dense layer follows
        index, pre = trace.pool_indices[i], trace.pre[i]
        if index is None:
            g = g.reshape(n, k, *pre.shape[1:]) * (pre > 0).to(g.dtype)[:, None]
        else:  # mask at the switches (a quarter of the units), then scatter to them: the rest is zero
            c, switches = index.shape[1], index.flatten(2)
            g = g.reshape(n, k, c, -1) * (pre.flatten(2).gather(2, switches) > 0).to(g.dtype)[:, None]
            unpooled = g.new_zeros(n, k, c, pre.shape[2] * pre.shape[3])
            g = unpooled.scatter_(3, switches[:, None].expand_as(g), g).view(n, k, *pre.shape[1:])
        if i == l - 1:
            return g
        g = _transpose_layer(model.layers[i], g, trace.inputs[i].shape)
        below = trace.pool_indices[i - 1] if trace.pool_indices[i - 1] is not None else trace.pre[i - 1]
        g = g.reshape(n, k, *below.shape[1:])
    raise AssertionError("unreachable")


def output_by_preactivation(
    model: ReluNet, trace: Trace, l: int, neurons: Sequence[int] | None = None, mode: str = "auto"
) -> torch.Tensor:
    """``J^L_l = d f / d a_l`` per sample, for the chosen neurons (channels) of layer ``l``.

    Args:
        trace: ``model.trace(x)`` at ``theta^n``.
        neurons: the units (conv: channels) kept; all when ``None``.
        mode: ``forward`` (one ``jvp`` per unit of the chosen neurons), ``reverse`` (one
            :func:`reverse_sweep` carrying the ``K`` outputs' cotangents) or ``auto``
            (forward when the units are fewer than ``K``).

    Returns:
        ``(N, K, C)`` for a dense layer, ``(N, K, C, H, W)`` for a conv layer.
    """
    a = trace.pre[l - 1].detach()
    n, k = a.shape[0], trace.output.shape[1]
    idx = list(range(a.shape[1])) if neurons is None else list(neurons)
    spatial = a.shape[2:]
    units = len(idx) * int(torch.tensor(spatial).prod()) if spatial else len(idx)
    if mode == "auto":
        mode = "forward" if units < k else "reverse"
    if mode == "reverse":
        with torch.no_grad():  # a linear sweep by hand: nothing to record for autograd
            g = reverse_sweep(model, trace, l)
        return g if idx == list(range(a.shape[1])) else g[:, :, idx].contiguous()
    if mode != "forward":
        raise ValueError(f"mode={mode!r}; valid: auto, forward, reverse")
    tail = clamped_tail(model, l, trace)
    with torch.enable_grad():
        basis = torch.zeros(units, *a.shape[1:], dtype=a.dtype, device=a.device)
        flat = torch.arange(units, device=a.device)
        channel = torch.as_tensor(idx, device=a.device).repeat_interleave(units // len(idx))
        within = flat % (units // len(idx))
        basis.view(units, a.shape[1], -1)[flat, channel, within] = 1.0
        tangents = basis[:, None].expand(units, n, *a.shape[1:])
        out = vmap(lambda t: jvp(tail, (a,), (t,))[1])(tangents)  # (units, N, K)
        return out.view(len(idx), *spatial, n, k).movedim((-2, -1), (0, 1)).detach()


def _linear_rule(layer: nn.Linear, inputs: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Dense: ``J[n,k,c,q] = G[n,k,c] x~[n,q]``; inputs ``(N, D)``, G ``(N, K, C)`` -> ``(N, K, C, D+1)``."""
    xt = F.pad(inputs, (0, 1), value=1.0)
    return torch.einsum("nkc,nq->nkcq", g, xt)


def unfold_patches(layer: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """``U~``: ``(N, C_in kh kw + 1, positions)``, the conv's input patches and a row of ones.

    Same values as ``F.unfold`` with a row of ones appended, but laid out in memory as
    ``(N, positions, Q)`` (the result is a transposed view): that is the operand layout
    the per-sample product wants, and one strided copy into it is about twice as fast
    as ``F.unfold`` followed by a pad.
    """
    if layer.groups != 1 or isinstance(layer.padding, str):
        raise NotImplementedError("conv rule supports groups=1 and numeric padding only")
    (kh, kw), (dh, dw), (sh, sw), (ph, pw) = layer.kernel_size, layer.dilation, layer.stride, layer.padding
    n, c = inputs.shape[:2]
    padded = F.pad(inputs, (pw, pw, ph, ph))
    # (N, C, H', W', span_h, span_w), then every dilation-th tap: (N, C, H', W', kh, kw)
    windows = padded.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    h, w = windows.shape[2:4]
    out = inputs.new_empty(n, h, w, c * kh * kw + 1)
    out[..., :-1].view(n, h, w, c, kh, kw).copy_(windows.permute(0, 2, 3, 1, 4, 5))
    out[..., -1] = 1.0
    return out.view(n, h * w, -1).transpose(1, 2)


def _conv_rule(layer: nn.Conv2d, inputs: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Conv: ``J[n,k,c,q] = sum_p G[n,k,c,p] U~[n,q,p]``; G ``(N, K, C, H, W)`` -> ``(N, K, C, Q)``.

    One batched GEMM over samples, ``(K C, positions) x (positions, Q)``, both operands contiguous.
    """
    n, k, c = g.shape[:3]
    u = unfold_patches(layer, inputs)  # (N, Q, P), stored as (N, P, Q)
    return torch.bmm(g.reshape(n, k * c, -1), u.transpose(1, 2)).view(n, k, c, -1)


# One rule per layer type: (layer, layer input, J^L_l of the chosen neurons) -> (N, K, C, Q).
RULES: dict[type, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.Linear: _linear_rule,
    nn.Conv2d: _conv_rule,
}


def layer_jacobian(
    model: ReluNet, trace: Trace, l: int, neurons: Sequence[int] | None = None, mode: str = "auto"
) -> torch.Tensor:
    """Per-sample Jacobian of the output by the neurons' parameters: ``(N, K, C, Q)``."""
    layer = model.layer(l)
    rule = RULES.get(type(layer))
    if rule is None:
        raise TypeError(f"no Jacobian rule for {type(layer).__name__}; registered: {[t.__name__ for t in RULES]}")
    g = output_by_preactivation(model, trace, l, neurons, mode)
    return rule(layer, trace.inputs[l - 1].detach(), g)


def scale_jacobian(model: ReluNet, x: torch.Tensor, scale: Scale, mode: str = "auto") -> torch.Tensor:
    """``J^n_S(x)``, the per-sample output Jacobian at the scale: ``(N, K, P)`` (Section 1).

    Ordered as :func:`scale_vector`; ``model`` holds ``theta^n``.
    """
    with torch.no_grad():
        trace = model.trace(x)
    parts = [layer_jacobian(model, trace, l, idx, mode).flatten(2) for l, idx in scale.blocks(model)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # a layer: no copy


def reference_jacobian(model: ReluNet, x: torch.Tensor, scale: Scale) -> torch.Tensor:
    """Slow and obviously correct: one ``autograd.grad`` per sample and output coordinate."""
    params = [(model.layer(l), idx) for l, idx in scale.blocks(model)]
    rows = []
    for n in range(x.shape[0]):
        f = model(x[n : n + 1])[0]
        per_output = []
        for k in range(f.shape[0]):
            tensors = [t for layer, _ in params for t in (layer.weight, layer.bias)]
            grads = torch.autograd.grad(f[k], tensors, retain_graph=True)
            parts = []
            for i, (layer, idx) in enumerate(params):
                gw, gb = grads[2 * i], grads[2 * i + 1]
                parts.append(torch.cat([gw.flatten(1), gb[:, None]], 1)[idx].flatten())
            per_output.append(torch.cat(parts))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def jacrev_jacobian(model: ReluNet, x: torch.Tensor, scale: Scale) -> torch.Tensor:
    """``vmap(jacrev)`` over samples of ``v -> f(x; theta_S = v)``: ``(N, K, P)``."""
    theta = scale_vector(model, scale).detach()

    def f(v: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, scale_parameters(model, scale, v), (xi[None],))[0]

    return vmap(jacrev(f), in_dims=(None, 0))(theta, x)


__all__ = [
    "RULES",
    "Scale",
    "clamped_tail",
    "jacrev_jacobian",
    "layer_jacobian",
    "layer_matrix",
    "neuron_count",
    "output_by_preactivation",
    "reverse_sweep",
    "reference_jacobian",
    "scale_jacobian",
    "scale_parameters",
    "scale_vector",
    "unfold_patches",
]
