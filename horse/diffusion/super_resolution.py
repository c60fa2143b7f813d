"""Latent super-resolution stage (spec §5.6).

1. The base video latent ``[B, C, T, h, w]`` is upsampled trilinearly (align_corners=True) to (T, H', W').
2. It is re-noised on the variance-preserving ZeroSNR table: ``a * x_up + sqrt(1 - a^2) * eps`` with
   ``a = zerosnr_alpha(220)`` = 0.8389.
3. The audio fed to the SR model is ``0.7 * eps + 0.3 * audio_base`` (a flow point at sigma 0.7); it is
   held fixed (never stepped) and the stage returns the clean base audio.
4. The video runs the 5-step UniPC grid (shift 5), starting at sigma ~1 of the schedule although the input
   is only partly noised: the model is timestep-free and reads the noise level from the state.

Noise draw order: video noise, then audio noise, from the given generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .flow import correlate_frames
from .samplers import ProgressCallback, VelocityFn, randn, sample_unipc
from .schedules import DEFAULT_SHIFT, SR_NOISE_INDEX, SR_NUM_STEPS, zerosnr_alpha

SR_AUDIO_NOISE_SCALE = 0.7


def upsample_video_latent(video: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Trilinear, align_corners=True resize of ``[B, C, T, h, w]`` to ``size = (T', H', W')``."""
    if video.ndim != 5 or len(size) != 3:
        raise ValueError(f"expected video [B, C, T, h, w] and size (T, H, W), got {tuple(video.shape)} and {size}")
    return F.interpolate(video, size=tuple(int(s) for s in size), mode="trilinear", align_corners=True)


def zerosnr_renoise(x: Tensor, generator: torch.Generator, noise_index: int = SR_NOISE_INDEX,
                    video_frame_correlation: float = 0.0) -> Tensor:
    """Variance-preserving re-noise ``a * x + sqrt(1 - a^2) * eps`` of a video latent at a ZeroSNR table index
    (0: unchanged, no draw); ``eps`` follows the SR model's frame-correlated prior (``flow.correlate_frames``)."""
    if noise_index == 0:
        return x
    a = zerosnr_alpha(noise_index).to(x.device)
    noise = correlate_frames(randn(x.shape, generator, x.device, x.dtype), video_frame_correlation)
    return x * a + noise * (1 - a**2) ** 0.5


def noisy_sr_audio(audio: Tensor, generator: torch.Generator, noise_scale: float = SR_AUDIO_NOISE_SCALE) -> Tensor:
    """``noise_scale * eps + (1 - noise_scale) * audio``: the fixed audio input of the SR stage."""
    if not 0.0 <= noise_scale <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
    noise = randn(audio.shape, generator, audio.device, audio.dtype)
    return noise * noise_scale + audio * (1 - noise_scale)


def prepare_super_resolution(
    video_base: Tensor,
    audio_base: Tensor,
    latent_hw: tuple[int, int],
    generator: torch.Generator,
    *,
    noise_index: int = SR_NOISE_INDEX,
    audio_noise_scale: float = SR_AUDIO_NOISE_SCALE,
    video_frame_correlation: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The SR starting state: (re-noised upsampled video, noisy held audio). Draws video noise, then audio noise."""
    up = upsample_video_latent(video_base, (video_base.shape[2], *latent_hw))
    video = zerosnr_renoise(up, generator, noise_index, video_frame_correlation)
    audio = noisy_sr_audio(audio_base, generator, audio_noise_scale)
    return video, audio


def sample_super_resolution(
    velocity_fn: VelocityFn,
    video_base: Tensor,
    audio_base: Tensor,
    latent_hw: tuple[int, int],
    generator: torch.Generator,
    *,
    num_steps: int = SR_NUM_STEPS,
    shift: float = DEFAULT_SHIFT,
    noise_index: int = SR_NOISE_INDEX,
    audio_noise_scale: float = SR_AUDIO_NOISE_SCALE,
    video_frame0: Tensor | None = None,
    callback: ProgressCallback | None = None,
    video_frame_correlation: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Run the SR stage; returns (SR video latent ``[B, C, T, H', W']``, the clean base audio).

    ``video_frame0``: for TI2V, the image latent encoded at SR resolution, overwriting latent frame 0.
    ``velocity_fn`` sees ``sigma_audio = audio_noise_scale`` at every step.
    ``video_frame_correlation``: the SR model's own noise prior (its checkpoint's value).
    """
    video, audio = prepare_super_resolution(
        video_base, audio_base, latent_hw, generator, noise_index=noise_index, audio_noise_scale=audio_noise_scale,
        video_frame_correlation=video_frame_correlation,
    )
    video, _ = sample_unipc(
        velocity_fn, video, audio, num_steps=num_steps, shift=shift,
        video_frame0=video_frame0, hold_audio=audio_noise_scale, callback=callback,
    )
    return video, audio_base
