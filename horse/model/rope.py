"""Element-wise Fourier RoPE over 9-column coordinates (spec 3.4).

Coordinate columns: ``(t, h, w, T, H, W, refT, refH, refW)``. Per axis
``scale = (ref - 1) / (size - 1)`` (1 when both are 1), h and w are centred on
``(size - 1) / 2``, and ``theta[a, k] = (coord_a - centre_a) * scale_a * band_k``
with ``band_k = max_frequency / temperature^(k / bands)`` (the release: max_frequency 1). The table is
``[sin(theta_t), sin(theta_h), sin(theta_w), cos(...)]``: ``[N, 6 * bands]``.
Rotate-half is applied to the first ``6 * bands`` dims of every q/k head.

Learned frequencies (``DiTConfig.rope_frequencies``, off in the release): each KV head's rotation pair i
gets its own frequency vector f_i over (t, h, w), theta_i = f_i . position (RoPE-Mixed, Heo et al. 2024).
The release's bands are the axis-aligned case f_i = band_k e_axis. Why: with axis-aligned bands a head's
positional score is a sum over axes, g(dt) + g(dh) + g(dw), so its attention weights factor into a box
and can never follow an oblique line dh = v * dt (a moving object); an oblique f_i can.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ROPE_FREQUENCY_MODES


def rope_bands(num_bands: int, temperature: float = 10000.0, max_frequency: float = 1.0) -> torch.Tensor:
    # Computed as max_frequency / t^(k/n) in fp32: with max_frequency 1 that is the release's 1 / t^(k/n),
    # 4 of whose 16 values differ by 1 ulp from the correctly rounded t^(-k/n); bitwise parity needs it.
    return max_frequency / (temperature ** (torch.arange(num_bands, dtype=torch.float32) / num_bands))


def rope_positions(coords: torch.Tensor) -> torch.Tensor:
    """``coords [N, 9]`` -> centred, scaled positions ``[N, 3]`` (t, h, w) in fp32."""
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
    return (pos - centre) * scale


def rope_angles(coords: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    """``coords [N, 9]`` -> angles ``[N, 3, bands]`` (fp32)."""
    return rope_positions(coords).unsqueeze(-1) * bands.to(coords.device)


class ElementWiseFourierEmbed(nn.Module):
    """Holds ``bands`` as a persistent buffer: the official checkpoints carry ``adapter.rope.bands``.

    ``frequencies="fixed"`` (the release): ``forward -> [N, 6 * bands]``, shared by every head.
    ``"learned"`` / ``"learned_rotated"``: a parameter ``frequencies [kv_heads, 3 * bands, 3]`` (one (t, h, w)
    vector per KV head and rotation pair), initialised to the release's axis-aligned bands or to them turned
    by a random rotation per KV head; ``forward -> [N, kv_heads, 6 * bands]``.
    """

    def __init__(self, head_dim: int, temperature: float = 10000.0, max_frequency: float = 1.0,
                 frequencies: str = "fixed", kv_heads: int = 1):
        super().__init__()
        if frequencies not in ROPE_FREQUENCY_MODES:
            raise ValueError(f"rope frequencies must be one of {ROPE_FREQUENCY_MODES}, got {frequencies!r}")
        self.mode, self._band_law = frequencies, (head_dim // 8, temperature, max_frequency)
        self.register_buffer("bands", rope_bands(head_dim // 8, temperature, max_frequency), persistent=True)
        if frequencies != "fixed":
            self.frequencies = nn.Parameter(torch.empty(kv_heads, 3 * (head_dim // 8), 3))
            self.reset_frequencies()

    @torch.no_grad()
    def reset_frequencies(self, generator: torch.Generator | None = None) -> None:
        """Axis-aligned release bands, each KV head's (t, h, w) frame randomly rotated for ``learned_rotated``."""
        heads, pairs, axes = self.frequencies.shape
        bands = rope_bands(*self._band_law).repeat(axes)
        frame = torch.eye(axes).expand(heads, axes, axes)
        if self.mode == "learned_rotated":
            q, r = torch.linalg.qr(torch.randn(heads, axes, axes, generator=generator))
            frame = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-uniform
        axis_of_pair = torch.arange(pairs) // (pairs // axes)
        # pair i of axis a: band_k times the frame's a-th column
        self.frequencies.copy_((bands[:, None] * frame[:, :, axis_of_pair].transpose(1, 2)).to(self.frequencies))

    def fixed_features(self, coords: torch.Tensor) -> torch.Tensor:
        """``[N, 6 * bands]``: sin and cos of the fixed bands' angles (the release's RoPE table)."""
        theta = rope_angles(coords, self.bands.float()).flatten(1)
        return torch.cat([theta.sin(), theta.cos()], dim=1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return self.fixed_features(coords)
        theta = torch.einsum("na,hpa->nhp", rope_positions(coords), self.frequencies.float())
        return torch.cat([theta.sin(), theta.cos()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Non-interleaved rotate-half on the first ``rope.shape[-1]`` dims of ``x [N, heads, head_dim]``, in fp32.

    ``rope [N, 2 * half]`` is shared by every head; ``rope [N, kv_heads, 2 * half]`` (learned frequencies) is per
    KV head, and query head h uses KV head h // (heads / kv_heads), as in GQA.
    """
    half = rope.shape[-1] // 2
    if rope.dim() == 2:
        rope = rope[:, None]
    elif rope.shape[1] != x.shape[1]:
        rope = rope.repeat_interleave(x.shape[1] // rope.shape[1], dim=1)
    sin, cos = rope[..., :half], rope[..., half:]
    x1, x2, rest = x.split([half, half, x.shape[-1] - 2 * half], dim=-1)
    return torch.cat([(x1 * cos).sub_(x2 * sin), (x2 * cos).add_(x1 * sin), rest], dim=-1)
