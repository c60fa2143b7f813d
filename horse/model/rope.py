"""Element-wise Fourier RoPE over 9-column coordinates (spec 3.4).

Coordinate columns: ``(t, h, w, T, H, W, refT, refH, refW)``. Per axis
``scale = (ref - 1) / (size - 1)`` (1 when both are 1), h and w are centred on
``(size - 1) / 2``, and ``theta[a, k] = (coord_a - centre_a) * scale_a * band_k``
with ``band_k = max_frequency / temperature^(k / bands)`` (the release: max_frequency 1). The table is
``[sin(theta_t), sin(theta_h), sin(theta_w), cos(...)]``: ``[N, 6 * bands]``.
Rotate-half is applied to the first ``6 * bands`` dims of every q/k head.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_bands(num_bands: int, temperature: float = 10000.0, max_frequency: float = 1.0) -> torch.Tensor:
    # Computed as max_frequency / t^(k/n) in fp32: with max_frequency 1 that is the release's 1 / t^(k/n),
    # 4 of whose 16 values differ by 1 ulp from the correctly rounded t^(-k/n); bitwise parity needs it.
    return max_frequency / (temperature ** (torch.arange(num_bands, dtype=torch.float32) / num_bands))


def rope_angles(coords: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    """``coords [N, 9]`` -> angles ``[N, 3, bands]`` (fp32)."""
    if coords.dim() != 2 or coords.shape[1] != 9:
        raise ValueError(f"coords must be [N, 9] (t,h,w,T,H,W,refT,refH,refW), got {tuple(coords.shape)}")
    coords = coords.float()
    pos, size, ref = coords[:, 0:3], coords[:, 3:6], coords[:, 6:9]
    both_one = (size == 1) & (ref == 1)
    if bool(((size == 1) & ~both_one).any()):
        rows = torch.nonzero(((size == 1) & ~both_one).any(1)).flatten()[:5].tolist()
        raise ValueError(
            f"coords rows {rows}: an axis has size 1 but ref != 1, so its RoPE scale (ref-1)/(size-1) "
            "divides by zero; give such an axis ref 1 (e.g. v1 coords with a single text token)")
    scale = torch.where(both_one, torch.ones_like(size), (ref - 1) / torch.where(both_one, 2.0, size - 1))
    centre = torch.zeros_like(size)
    centre[:, 1:] = (size[:, 1:] - 1) / 2
    return ((pos - centre) * scale).unsqueeze(-1) * bands.to(coords.device)


class ElementWiseFourierEmbed(nn.Module):
    """Holds ``bands`` as a persistent buffer: the official checkpoints carry ``adapter.rope.bands``."""

    def __init__(self, head_dim: int, temperature: float = 10000.0, max_frequency: float = 1.0):
        super().__init__()
        self.register_buffer("bands", rope_bands(head_dim // 8, temperature, max_frequency), persistent=True)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        theta = rope_angles(coords, self.bands.float()).flatten(1)
        return torch.cat([theta.sin(), theta.cos()], dim=1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Non-interleaved rotate-half on the first ``rope.shape[1]`` dims of ``x [N, heads, head_dim]``, in fp32."""
    half = rope.shape[1] // 2
    sin, cos = rope[:, None, :half], rope[:, None, half:]
    x1, x2, rest = x.split([half, half, x.shape[-1] - 2 * half], dim=-1)
    return torch.cat([(x1 * cos).sub_(x2 * sin), (x2 * cos).add_(x1 * sin), rest], dim=-1)
