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


def gelu7(u: torch.Tensor) -> torch.Tensor:
    g = u.clamp(max=ACT_LIMIT)
    return g * torch.sigmoid(GELU_ALPHA * g)


def swiglu7(u: torch.Tensor) -> torch.Tensor:
    """Interleaved split: even columns are the activation branch, odd columns the linear branch."""
    g = u[..., 0::2].clamp(max=ACT_LIMIT)
    lin = u[..., 1::2].clamp(-ACT_LIMIT, ACT_LIMIT)
    return g * torch.sigmoid(GELU_ALPHA * g) * (lin + 1)


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
        parts = [fn(j, xs[self.bounds[j]:self.bounds[j + 1]]) for j in range(len(self.counts)) if self.counts[j]]
        ys = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        return ys if self.sorted else ys.index_select(0, self.inv)


class ExpertLinear(nn.Module):
    """A bias-free linear with ``num_experts`` experts packed along dim 0: ``weight [out*m, in]``."""

    def __init__(self, in_features: int, out_features: int, num_experts: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.num_experts = in_features, out_features, num_experts
        self.weight = nn.Parameter(torch.empty(out_features * num_experts, in_features))

    def expert_weight(self, j: int) -> torch.Tensor:
        j = j if self.num_experts > 1 else 0
        return self.weight[j * self.out_features:(j + 1) * self.out_features]

    def forward(self, x: torch.Tensor, expert: int, dtype: torch.dtype) -> torch.Tensor:
        """Matmul in ``dtype`` (inputs and weight cast), output in ``dtype``."""
        return F.linear(x.to(dtype), self.expert_weight(expert).to(dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, experts={self.num_experts}"


class MultiModalityRMSNorm(nn.Module):
    """RMSNorm in fp32 with a zero-initialised ``(w + 1)`` scale; ``weight [dim*m]`` holds m expert chunks."""

    def __init__(self, dim: int, num_experts: int = 1, eps: float = 1e-6):
        super().__init__()
        self.dim, self.num_experts, self.eps = dim, num_experts, eps
        self.weight = nn.Parameter(torch.zeros(dim * num_experts))

    def forward(self, x: torch.Tensor, expert: int = 0) -> torch.Tensor:
        j = expert if self.num_experts > 1 else 0
        scale = self.weight[j * self.dim:(j + 1) * self.dim].float() + 1
        return F.rms_norm(x.float(), (self.dim,), scale, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.num_experts}, eps={self.eps}"
