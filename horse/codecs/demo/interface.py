"""The small interface every horse codec exposes (demo codecs here; Wan2.2 / Stable Audio /
T5Gemma wrappers can implement the same Protocols).

Conventions:
- Latents are channel-first and batched: video ``[B, C, T, h, w]``, audio ``[B, C, Na]``
  (the DiT data proxy transposes audio to ``[Na, C]`` tokens).
- ``encode`` maps data to *normalised* latents (the scale the DiT sees); ``decode`` inverts it.
- ``latent_shape`` tells a sampler what noise to draw without encoding anything.
"""

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class VideoCodec(Protocol):
    latent_channels: int

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, F, H, W]`` RGB in [-1, 1] -> latent ``[B, C, T, h, w]``."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent ``[B, C, T, h, w]`` -> ``[B, 3, F, H, W]`` RGB in (about) [-1, 1]."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, T, h, w)`` of the latent of one clip."""


@runtime_checkable
class AudioCodec(Protocol):
    latent_channels: int
    sample_rate: int  # rate that encode expects and decode returns

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, channels, S]`` at ``sample_rate`` -> latent ``[B, C, Na]``."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent ``[B, C, Na]`` -> ``[B, channels, S]`` at ``sample_rate``."""

    def latent_shape(self, num_samples: int) -> tuple[int, int]:
        """``(C, Na)`` of the latent of a waveform of ``num_samples`` samples."""


@runtime_checkable
class TextEncoder(Protocol):
    feature_dim: int
    max_length: int

    def encode(self, prompt: str) -> torch.Tensor:
        """One prompt -> fp32 features ``[L, feature_dim]`` with its true length L <= max_length."""
