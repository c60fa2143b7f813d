"""Video codec: the Wan2.2 VAE (Wan2.2-TI2V-5B, `Wan2.2_VAE.pth`) through diffusers' `AutoencoderKLWan`.

Pixels [B, 3, F, H, W] in [-1, 1] with F = 4k + 1 and H, W multiples of 16 become latents
[B, 48, (F - 1)/4 + 1, H/16, W/16] (a 2x pixel patchify, then three 2x spatial and two 2x temporal
downsamplings). `encode` returns the posterior mean normalised per channel, (mu - mean) / std, with
Wan2.2's 48 constants; `decode` undoes the normalisation and clamps pixels to [-1, 1], as the
official `Wan2_2_VAE` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from horse.codecs.key_maps import convert_state_dict, expected_shapes
from horse.codecs.key_maps.wan22_vae import original_to_diffusers

# Per-channel latent statistics of Wan2.2's VAE (official Wan2_2_VAE mean / std).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip

# AutoencoderKLWan arguments of the Wan2.2 VAE (as diffusers' Wan2.2-TI2V-5B conversion builds it).
WAN22_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,  # 3 colours x the 2x2 pixel patch
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    latents_mean=WAN22_LATENTS_MEAN,
    latents_std=WAN22_LATENTS_STD,
)


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.pth` state dict on the CPU, tensors only (memory-mapped when the file format allows it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Wan2.2 VAE checkpoint not found: {path} (expected the published Wan2.2_VAE.pth)")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} is not a flat state dict of tensors (the layout of the published Wan2.2_VAE.pth)")
    return dict(state_dict)


class WanVideoCodec:
    """Pixels <-> normalised Wan2.2 latents. `vae` is the diffusers module (tiling etc. are available on it)."""

    def __init__(self, vae: "AutoencoderKLWan"):  # noqa: F821 (diffusers is imported lazily)
        self.vae = vae.eval().requires_grad_(False)
        config = vae.config
        self.temporal_stride = config.scale_factor_temporal
        self.spatial_stride = config.scale_factor_spatial
        self.latent_channels = config.z_dim
        if len(config.latents_mean) != config.z_dim or len(config.latents_std) != config.z_dim:
            raise ValueError(f"latents_mean/latents_std must have z_dim={config.z_dim} entries")
        self.latents_mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @classmethod
    def from_pth(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        config: Mapping[str, Any] | None = None,
    ) -> "WanVideoCodec":
        """Load the published `Wan2.2_VAE.pth`. `config` overrides entries of WAN22_VAE_CONFIG (tests use tiny ones)."""
        from diffusers import AutoencoderKLWan

        state_dict = load_torch_state_dict(path)
        with torch.device("meta"):  # no random init: every tensor comes from the file
            vae = AutoencoderKLWan(**{**WAN22_VAE_CONFIG, **(config or {})})
        converted = convert_state_dict(state_dict, original_to_diffusers, expected_shapes(vae), source=str(path))
        vae.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True, assign=True)
        return cls(vae.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T, h, w) of the latent of a clip with `frames` frames of height x width pixels."""
        self._check_pixel_size(frames, height, width)
        t = (frames - 1) // self.temporal_stride + 1
        return self.latent_channels, t, height // self.spatial_stride, width // self.spatial_stride

    def _check_pixel_size(self, frames: int, height: int, width: int) -> None:
        if frames < 1 or (frames - 1) % self.temporal_stride:
            raise ValueError(f"frame count must be {self.temporal_stride}k+1 (1, 5, 9, ...), got {frames}")
        if height % self.spatial_stride or width % self.spatial_stride:
            raise ValueError(f"height and width must be multiples of {self.spatial_stride}, got {height}x{width}")

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> normalised posterior mean [B, z, T, H/16, W/16], float32."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, F, H, W], got {tuple(pixels.shape)}")
        self._check_pixel_size(*pixels.shape[2:])
        posterior = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        mean = posterior.mode().float()
        return (mean - self.latents_mean.to(mean.device)) / self.latents_std.to(mean.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, z, T, h, w] -> pixels [B, 3, 4(T-1)+1, 16h, 16w] clamped to [-1, 1], float32."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, T, h, w], got {tuple(latents.shape)}")
        z = latents.float() * self.latents_std.to(latents.device) + self.latents_mean.to(latents.device)
        pixels = self.vae.decode(z.to(self.device, self.dtype)).sample
        return pixels.float().clamp(-1.0, 1.0)
