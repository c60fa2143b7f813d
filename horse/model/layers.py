"""Building blocks: per-modality experts, (w+1) RMSNorm, the clamped activations, modality groups."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import MODALITIES

# The release's clamped sigmoid-GELU: x*sigmoid(1.702x), with the activation branch capped at 7.
GELU_ALPHA = 1.702
ACT_LIMIT = 7.0


# The element-wise chains below work in place on fresh buffers: the same operations in the same
# order (bit-identical results), but without a new multi-megabyte allocation (and its page
# faults) per step, which halves their cost on CPU.

def _gate(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clamped sigmoid-GELU of the activation branch and its derivative: (value, d value/d g, clamp mask)."""
    inside = g <= ACT_LIMIT
    gc = g.clamp(max=ACT_LIMIT)
    s = torch.sigmoid_(gc * GELU_ALPHA)
    value = gc.mul_(s)
    # d/dg [g * sigmoid(a g)] = s + a * g * s * (1 - s) = s + a * value * (1 - s)
    deriv = torch.mul(value, GELU_ALPHA).mul_(torch.rsub(s, 1)).add_(s)
    return value, deriv, inside


def _gelu_forward(g: torch.Tensor) -> torch.Tensor:
    g = g.clamp(max=ACT_LIMIT)
    return torch.sigmoid_(g * GELU_ALPHA).mul_(g)


class _Gelu7(torch.autograd.Function):
    # Hand-written backward: autograd of the clamp/sigmoid chain keeps several [N, 4D]
    # temporaries alive; this saves only the input and recomputes.
    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return _gelu_forward(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        _, d, inside = _gate(u)
        return d.mul_(grad).mul_(inside)


class _Swiglu7(torch.autograd.Function):
    # Hand-written backward: autograd of the strided even/odd split would zero-fill and copy
    # a full-width gradient per branch; here both branch gradients interleave in one write.
    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        lin = u[..., 1::2].clamp(-ACT_LIMIT, ACT_LIMIT).add_(1)
        return _gelu_forward(u[..., 0::2]).mul_(lin)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        g, lin = u[..., 0::2], u[..., 1::2]
        value, d, inside = _gate(g)
        lin_inside = (lin >= -ACT_LIMIT) & (lin <= ACT_LIMIT)
        grad_g = d.mul_(grad).mul_(lin.clamp(-ACT_LIMIT, ACT_LIMIT).add_(1)).mul_(inside)
        grad_l = value.mul_(grad).mul_(lin_inside)
        return torch.stack([grad_g, grad_l], dim=-1).flatten(-2)


def gelu7(u: torch.Tensor) -> torch.Tensor:
    """``min(u, 7) * sigmoid(1.702 * min(u, 7))``: the release's clamped sigmoid-GELU."""
    return _Gelu7.apply(u)


def swiglu7(u: torch.Tensor) -> torch.Tensor:
    """Interleaved split: even columns are the activation branch (capped at 7), odd columns the
    linear branch (clamped to +-7, plus one)."""
    return _Swiglu7.apply(u)


ACTIVATION_FNS = {"gelu7": gelu7, "swiglu7": swiglu7}


class ModalityGroups:
    """The modality partition of one packed sequence, computed once per forward.

    Per-modality work (expert linears and norms, embedders, heads) runs on the
    contiguous slices of the modality-sorted sequence, and the result is put back
    in the original token order. When the sequence is already sorted (one sample
    laid out [video|audio|text]) no gather happens at all.
    """

    def __init__(self, modality: torch.Tensor, num_modalities: int = len(MODALITIES)):
        if modality.dim() != 1:
            raise ValueError(f"modality must be a 1-D tensor of ids, got shape {tuple(modality.shape)}")
        if modality.numel() and (int(modality.min()) < 0 or int(modality.max()) >= num_modalities):
            raise ValueError(f"modality ids must lie in 0..{num_modalities - 1} (video, audio, text)")
        self.modality = modality
        self.counts = torch.bincount(modality, minlength=num_modalities).tolist()
        self.sorted = bool((modality[1:] >= modality[:-1]).all()) if modality.numel() > 1 else True
        if self.sorted:
            self.perm = self.inv = None
        else:
            self.perm = torch.argsort(modality, stable=True)
            self.inv = torch.empty_like(self.perm)
            self.inv[self.perm] = torch.arange(self.perm.numel(), device=modality.device)
        bounds = [0]
        for c in self.counts:
            bounds.append(bounds[-1] + c)
        self.bounds = bounds

    def apply(self, x: torch.Tensor, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(j, rows_of_modality_j) -> rows`` over every present modality; original order out."""
        xs = x if self.sorted else x.index_select(0, self.perm)
        # split, not slicing: a slice's backward zero-fills a full-size gradient per modality
        chunks = xs.split(self.counts, 0)
        parts = [fn(j, chunks[j]) for j in range(len(self.counts)) if self.counts[j]]
        ys = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        return ys if self.sorted else ys.index_select(0, self.inv)


class ExpertLinear(nn.Module):
    """A bias-free linear with ``num_experts`` experts packed along dim 0: ``weight [out*m, in]``."""

    def __init__(self, in_features: int, out_features: int, num_experts: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.num_experts = in_features, out_features, num_experts
        self.weight = nn.Parameter(torch.empty(out_features * num_experts, in_features))

    def expert_weight(self, j: int) -> torch.Tensor:
        if self.num_experts == 1:
            return self.weight  # no slice: its backward would zero-fill a weight-sized gradient
        return self.weight[j * self.out_features:(j + 1) * self.out_features]

    def forward(self, x: torch.Tensor, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Matmul in ``dtype`` (inputs and weight cast), output in ``dtype``."""
        return F.linear(x.to(dtype), self.expert_weight(expert).to(dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, experts={self.num_experts}"


class _RMSNormScale(torch.autograd.Function):
    """``x * rsqrt(mean(x^2) + eps) * scale`` over the last dim, in fp32.

    The forward is the same composite as ``F.rms_norm`` (bit for bit, which parity needs);
    the hand-written backward saves only x and the inverse RMS instead of autograd's chain.
    """

    @staticmethod
    def forward(ctx, x, scale, eps: float):
        inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, inv, scale)
        return (x * inv).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        x, inv, scale = ctx.saved_tensors
        xhat = x * inv
        grad_scale = (grad * xhat).reshape(-1, x.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        gs = grad * scale
        grad_x = gs.sub_(xhat.mul_((gs * xhat).mean(-1, keepdim=True))).mul_(inv)
        return grad_x, grad_scale, None


class MultiModalityRMSNorm(nn.Module):
    """RMSNorm in fp32 with a zero-initialised ``(w + 1)`` scale; ``weight [dim*m]`` holds m expert chunks."""

    def __init__(self, dim: int, num_experts: int = 1, eps: float = 1e-6):
        super().__init__()
        self.dim, self.num_experts, self.eps = dim, num_experts, eps
        self.weight = nn.Parameter(torch.zeros(dim * num_experts))

    def forward(self, x: torch.Tensor, expert: int = 0) -> torch.Tensor:
        w = self.weight if self.num_experts == 1 else self.weight[expert * self.dim:(expert + 1) * self.dim]
        scale = w.float() + 1
        return _RMSNormScale.apply(x.float(), scale, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.num_experts}, eps={self.eps}"
