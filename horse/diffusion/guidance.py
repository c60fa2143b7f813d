"""Classifier-free guidance with a negative prompt and separate video/audio scales (spec §5.3, §5.6).

``classifier_free_guidance(cond_fn, uncond_fn)`` turns two velocity functions (see
``horse.diffusion.samplers`` for the protocol) into one: ``cond_fn`` runs the model with the prompt,
``uncond_fn`` with the negative-prompt context on the same latents. Per modality
``v = v_uncond + scale * (v_cond - v_uncond)``.

Release defaults: the video scale is 5.0 while the integer timestep ``int(sigma * 1000)`` is above 500
and 2.0 afterwards (27 + 5 of the 32 base steps); the audio scale is 5.0 throughout. The SR stage with
guidance uses a per-latent-frame video scale (``frame_guidance_scales``) and no switch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .samplers import VelocityFn
from .schedules import NUM_TRAIN_TIMESTEPS, timestep_from_sigma

VIDEO_GUIDANCE_SCALE = 5.0
VIDEO_GUIDANCE_SCALE_LATE = 2.0
VIDEO_GUIDANCE_SWITCH_TIMESTEP = 500
AUDIO_GUIDANCE_SCALE = 5.0

SR_VIDEO_GUIDANCE_SCALE = 3.5
SR_CFG_TRICK_FRAMES = 13
SR_CFG_TRICK_SCALE = 2.0

Scale = float | Tensor


def apply_guidance(v_cond: Tensor, v_uncond: Tensor, scale: Scale) -> Tensor:
    """``v_uncond + scale * (v_cond - v_uncond)``; a tensor scale must broadcast against the velocities."""
    if isinstance(scale, Tensor):
        scale = scale.to(device=v_cond.device, dtype=v_cond.dtype)
    return v_uncond + scale * (v_cond - v_uncond)


def video_guidance_scale(
    sigma_video: float,
    scale: Scale = VIDEO_GUIDANCE_SCALE,
    late_scale: float | None = VIDEO_GUIDANCE_SCALE_LATE,
    switch_timestep: int = VIDEO_GUIDANCE_SWITCH_TIMESTEP,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> Scale:
    """``scale`` while ``int(sigma * num_train_timesteps) > switch_timestep``, else ``late_scale`` (None: no switch)."""
    if late_scale is None or timestep_from_sigma(sigma_video, num_train_timesteps) > switch_timestep:
        return scale
    return late_scale


def classifier_free_guidance(
    cond_fn: VelocityFn,
    uncond_fn: VelocityFn,
    *,
    video_scale: Scale = VIDEO_GUIDANCE_SCALE,
    audio_scale: Scale = AUDIO_GUIDANCE_SCALE,
    late_video_scale: float | None = VIDEO_GUIDANCE_SCALE_LATE,
    switch_timestep: int = VIDEO_GUIDANCE_SWITCH_TIMESTEP,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> VelocityFn:
    """One guided velocity function from a conditional and an unconditional one (cond is called first).

    ``video_scale`` may be a tensor broadcastable to the video (e.g. ``frame_guidance_scales``); set
    ``late_video_scale=None`` to keep it for every step.
    """

    def guided(video: Tensor, audio: Tensor, sigma_video: float, sigma_audio: float, step: int):
        vc_video, vc_audio = cond_fn(video, audio, sigma_video, sigma_audio, step)
        vu_video, vu_audio = uncond_fn(video, audio, sigma_video, sigma_audio, step)
        s_video = video_guidance_scale(sigma_video, video_scale, late_video_scale, switch_timestep, num_train_timesteps)
        return apply_guidance(vc_video, vu_video, s_video), apply_guidance(vc_audio, vu_audio, audio_scale)

    return guided


def frame_guidance_scales(
    num_latent_frames: int,
    scale: float = SR_VIDEO_GUIDANCE_SCALE,
    trick_frames: int = SR_CFG_TRICK_FRAMES,
    trick_scale: float = SR_CFG_TRICK_SCALE,
    use_trick: bool = True,
) -> Tensor:
    """Per-latent-frame video scales ``[1, 1, T, 1, 1]`` of the SR stage: ``scale`` everywhere, lowered to
    ``min(trick_scale, scale)`` on frames ``[0, trick_frames)`` when ``use_trick`` (against over-exposure in I2V)."""
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames}")
    scales = torch.full((1, 1, num_latent_frames, 1, 1), float(scale))
    if use_trick:
        scales[:, :, :trick_frames] = min(trick_scale, scale)
    return scales
