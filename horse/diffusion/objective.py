"""Training-side noising for the flow-matching objective (spec §9): noise levels, clean-token masks,
the noisy inputs and targets, and caption dropout. The loss itself lives in ``horse.diffusion.loss``.

Layouts: video latents ``[B, C, T, h, w]`` (channels at dim 1), audio latents ``[B, Na, Ca]`` (channels
last). A "token" here is one latent position: a video ``(t, y, x)`` site or an audio frame. A clean mask
is a bool tensor over the token dims (video ``[B, T, h, w]``, audio ``[B, Na]``) or anything that
broadcasts to it (e.g. ``[B, T, 1, 1]`` for whole frames); True marks a clean conditioning token (TI2V
frame 0, reference audio) that is neither noised nor supervised.

Randomness comes only from the explicit ``generator``. ``prepare_flow_inputs`` draws, in order: the
video levels, the audio levels (unless shared), the video noise, the audio noise, then (only when
``frame_level_fraction > 0``) the per-frame video levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .flow import add_noise, correlate_frames, velocity_target
from .samplers import randn
from .schedules import DEFAULT_SHIFT, shift_sigma

VIDEO_CHANNEL_DIM = 1
VIDEO_TIME_DIM = 2
AUDIO_CHANNEL_DIM = 2


@dataclass
class NoiseConfig:
    """How training noise levels are drawn.

    distribution: "shifted_uniform" draws u ~ U(0, 1); "logit_normal" draws u = sigmoid(N(logit_mean, logit_std)).
        In both cases sigma = shift * u / (1 + (shift - 1) * u), so shift=1 gives the plain law.
    shift: default 5, the inference shift, so "shifted_uniform" matches the sampling grid's density.
    uniform_fraction: the share of levels drawn instead from U(0, 1) (unshifted), so every level keeps some
        training: a law centred on high noise otherwise leaves the last denoising steps (grain) untrained.
    audio_shift: the audio levels' shift when it should differ from the video's (None: ``shift``). Layout and
        motion are decided at high video noise, which a redundant latent (pixels, a VAE's) needs more of, while
        a compact audio latent still needs its low-noise levels.
    shared_across_modalities: False (default) draws video and audio levels independently per sample
        (mixed levels are in-distribution for this model, spec §9.2); True gives both the same level.
    frame_level_fraction: the share of samples whose video latent frames each get their own level from the
        same law (the "vectorised timesteps" of FVDM, arXiv 2410.03160, and Diffusion Forcing): a noisy frame
        between cleaner ones can only be recovered from its neighbours, which teaches how frames follow each
        other. The rest keep one level for the whole clip, the only case sampling asks for.
    video_frame_correlation: the correlation of neighbouring latent frames' noise (``flow.correlate_frames``;
        0 = independent, the release). It changes the model's noise prior, so sampling must start from the
        same law: the exported checkpoint carries it (``CheckpointConfig.video_frame_correlation``).
    """

    distribution: Literal["shifted_uniform", "logit_normal"] = "shifted_uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = DEFAULT_SHIFT
    uniform_fraction: float = 0.0
    audio_shift: float | None = None
    shared_across_modalities: bool = False
    frame_level_fraction: float = 0.0
    video_frame_correlation: float = 0.0

    def __post_init__(self):
        if self.distribution not in ("shifted_uniform", "logit_normal"):
            raise ValueError(f"distribution must be 'shifted_uniform' or 'logit_normal', got {self.distribution!r}")
        if self.logit_std <= 0 or self.shift <= 0:
            raise ValueError(f"logit_std and shift must be positive, got {self.logit_std} and {self.shift}")
        if not 0.0 <= self.video_frame_correlation < 1.0:
            raise ValueError(f"video_frame_correlation must be in [0, 1), got {self.video_frame_correlation}")
        for name in ("uniform_fraction", "frame_level_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.audio_shift is not None and self.audio_shift <= 0:
            raise ValueError(f"audio_shift must be positive (or null for the video's shift), got {self.audio_shift}")
        if self.shared_across_modalities and self.audio_shift not in (None, self.shift):
            raise ValueError(
                f"shared_across_modalities gives audio the video's level, so audio_shift={self.audio_shift} cannot "
                f"differ from shift={self.shift}; set audio_shift to null or shared_across_modalities to false")


def sample_sigmas(
    config: NoiseConfig, batch_size: int, generator: torch.Generator, device=None, shift: float | None = None
) -> Tensor:
    """One noise level per sample, float32 ``[B]`` in [0, 1] (``shift`` overrides ``config.shift``)."""
    if config.distribution == "shifted_uniform":
        u = torch.rand(batch_size, generator=generator, device=generator.device)
    else:
        z = torch.randn(batch_size, generator=generator, device=generator.device)
        u = torch.sigmoid(config.logit_mean + config.logit_std * z)
    sigma = shift_sigma(u, config.shift if shift is None else shift)
    if config.uniform_fraction > 0:  # drawn after the main law, so uniform_fraction=0 keeps the same stream
        uniform = torch.rand(batch_size, generator=generator, device=generator.device)
        pick = torch.rand(batch_size, generator=generator, device=generator.device) < config.uniform_fraction
        sigma = torch.where(pick, uniform, sigma)
    return sigma if device is None else sigma.to(device)


def sample_modality_sigmas(
    config: NoiseConfig, batch_size: int, generator: torch.Generator, device=None
) -> tuple[Tensor, Tensor]:
    """(video levels ``[B]``, audio levels ``[B]``): video drawn first; audio drawn next unless shared."""
    video = sample_sigmas(config, batch_size, generator, device)
    if config.shared_across_modalities:
        return video, video.clone()
    audio = sample_sigmas(config, batch_size, generator, device, shift=config.audio_shift)
    return video, audio


def sample_frame_levels(config: NoiseConfig, clip_levels: Tensor, num_frames: int, generator: torch.Generator) -> Tensor:
    """Video levels ``[B, T]``: ``clip_levels [B]`` on every frame, except for a ``frame_level_fraction`` share
    of samples whose frames draw their own levels from the video law."""
    batch = clip_levels.shape[0]
    own = sample_sigmas(config, batch * num_frames, generator, clip_levels.device).view(batch, num_frames)
    pick = torch.rand(batch, generator=generator, device=generator.device) < config.frame_level_fraction
    return torch.where(pick.to(clip_levels.device)[:, None], own, clip_levels[:, None])


def expand_token_mask(mask: Tensor | None, x: Tensor, channel_dim: int) -> Tensor | None:
    """Validate a clean mask over the token dims of ``x`` and insert a size-1 channel dim so it broadcasts."""
    if mask is None:
        return None
    token_shape = x.shape[:channel_dim] + x.shape[channel_dim + 1 :]
    if mask.dtype != torch.bool:
        raise ValueError(f"clean masks must be bool (True = clean token), got {mask.dtype}")
    try:
        if mask.ndim != len(token_shape) or torch.broadcast_shapes(mask.shape, token_shape) != token_shape:
            raise RuntimeError
    except RuntimeError as err:
        raise ValueError(
            f"clean mask of shape {tuple(mask.shape)} does not broadcast to the token shape {tuple(token_shape)} "
            f"of a tensor {tuple(x.shape)} (channels at dim {channel_dim})"
        ) from err
    return mask.to(x.device).unsqueeze(channel_dim)


def leading_frames_mask(is_conditioned: Tensor, num_latent_frames: int, num_clean_frames: int = 1) -> Tensor:
    """Video clean mask ``[B, T, 1, 1]``: the first ``num_clean_frames`` frames of conditioned samples (TI2V)."""
    if is_conditioned.ndim != 1 or not 0 <= num_clean_frames <= num_latent_frames:
        raise ValueError("is_conditioned must be a bool vector [B] and 0 <= num_clean_frames <= num_latent_frames")
    frames = torch.arange(num_latent_frames, device=is_conditioned.device) < num_clean_frames
    return (is_conditioned.bool()[:, None] & frames[None, :])[:, :, None, None]


def noise_latents(
    x0: Tensor, sigma: Tensor | float, eps: Tensor, clean_mask: Tensor | None = None, channel_dim: int = 1
) -> Tensor:
    """``(1 - sigma) * x0 + sigma * eps`` except on clean tokens, which keep ``x0``."""
    noisy = add_noise(x0, eps, sigma)
    mask = expand_token_mask(clean_mask, x0, channel_dim)
    return noisy if mask is None else torch.where(mask, x0, noisy)


@dataclass
class FlowTrainingInputs:
    """Noisy model inputs, velocity targets ``eps - x0``, levels and clean masks.

    ``sigma_audio`` is ``[B]``; ``sigma_video`` is ``[B]``, or ``[B, 1, T, 1, 1]`` (one level per latent frame)
    when ``frame_level_fraction > 0``: both broadcast against the video (``flow.broadcast_sigma``).
    """

    video: Tensor
    audio: Tensor
    video_target: Tensor
    audio_target: Tensor
    sigma_video: Tensor
    sigma_audio: Tensor
    video_clean: Tensor | None = None
    audio_clean: Tensor | None = None


def prepare_flow_inputs(
    video0: Tensor,
    audio0: Tensor,
    config: NoiseConfig,
    generator: torch.Generator,
    *,
    video_clean: Tensor | None = None,
    audio_clean: Tensor | None = None,
) -> FlowTrainingInputs:
    """Draw levels and noise for clean latents ``video0 [B, C, T, h, w]`` and ``audio0 [B, Na, Ca]``."""
    if video0.ndim != 5 or audio0.ndim != 3 or video0.shape[0] != audio0.shape[0]:
        raise ValueError(
            f"expected video [B, C, T, h, w] and audio [B, Na, Ca] with the same B, got "
            f"{tuple(video0.shape)} and {tuple(audio0.shape)}"
        )
    sigma_video, sigma_audio = sample_modality_sigmas(config, video0.shape[0], generator, video0.device)
    eps_video = correlate_frames(randn(video0.shape, generator, video0.device, video0.dtype),
                                 config.video_frame_correlation, VIDEO_TIME_DIM)
    eps_audio = randn(audio0.shape, generator, audio0.device, audio0.dtype)
    if config.frame_level_fraction > 0:  # [B, 1, T, 1, 1]: broadcasts against the video like a [B] level does
        sigma_video = sample_frame_levels(config, sigma_video, video0.shape[2], generator)[:, None, :, None, None]
    return FlowTrainingInputs(
        video=noise_latents(video0, sigma_video.to(video0.dtype), eps_video, video_clean, VIDEO_CHANNEL_DIM),
        audio=noise_latents(audio0, sigma_audio.to(audio0.dtype), eps_audio, audio_clean, AUDIO_CHANNEL_DIM),
        video_target=velocity_target(video0, eps_video),
        audio_target=velocity_target(audio0, eps_audio),
        sigma_video=sigma_video,
        sigma_audio=sigma_audio,
        video_clean=video_clean,
        audio_clean=audio_clean,
    )


def drop_captions(
    text: Tensor | list[Tensor], null_text: Tensor, prob: float, generator: torch.Generator
) -> tuple[Tensor | list[Tensor], Tensor]:
    """Replace each sample's text features by ``null_text`` with probability ``prob`` (CFG training).

    ``text`` is a batch ``[B, L, D]`` (then ``null_text`` must broadcast to ``[L, D]``) or a list of
    per-sample ``[L_i, D]`` tensors (then ``null_text [L0, D]`` may have its own length, as the release's
    negative prompt does). Returns the new features and the bool mask ``[B]`` of dropped samples.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"caption dropout probability must be in [0, 1], got {prob}")
    batch = len(text) if isinstance(text, list) else text.shape[0]
    dropped = torch.rand(batch, generator=generator, device=generator.device) < prob
    if isinstance(text, list):
        return [null_text.to(t.device, t.dtype) if d else t for t, d in zip(text, dropped.tolist())], dropped
    if text.ndim != 3:
        raise ValueError(f"batched text features must be [B, L, D], got {tuple(text.shape)}")
    try:
        null = null_text.to(text.device, text.dtype).expand(text.shape[1:])
    except RuntimeError as err:
        raise ValueError(
            f"null_text {tuple(null_text.shape)} must broadcast to the per-sample shape {tuple(text.shape[1:])}; "
            "pass a list of per-sample tensors when the lengths differ"
        ) from err
    keep = dropped.to(text.device)[:, None, None]
    return torch.where(keep, null.unsqueeze(0), text), dropped
