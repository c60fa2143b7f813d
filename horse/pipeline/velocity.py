"""The DiT as a sampler ``velocity_fn`` (protocol in ``horse.diffusion.samplers``), with classifier-free guidance
run as ONE packed forward per step.

Each batch element becomes one packed sample ``[video | audio | text]``; with guidance, the conditional samples
(prompt features) and the unconditional ones (negative-prompt features, same latents) are concatenated into one
sequence separated by ``cu_seqlens``, so attention never crosses between them and the result equals two
separate forwards. Guidance is then ``v_u + s * (v_c - v_u)`` per modality, the video scale switching to
``late_video_scale`` once ``int(sigma * 1000) <= switch_timestep`` (``horse.diffusion.guidance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from horse.diffusion.flow import as_velocity
from horse.diffusion.guidance import apply_guidance, video_guidance_scale
from horse.diffusion.samplers import VelocityFn
from horse.model.packing import pack_for_model, unpack



@dataclass(frozen=True)
class Guidance:
    video: float = 5.0
    audio: float = 5.0
    late_video: float | None = 2.0
    switch_timestep: int = 500

    @property
    def active(self) -> bool:
        """False when every scale is 1: then the unconditional pass changes nothing and is skipped."""
        return not (self.video == 1.0 and self.audio == 1.0 and self.late_video in (None, 1.0))


def make_velocity_fn(model, text: Tensor, negative_text: Tensor | None = None, guidance: Guidance | None = None,
                     *, coords_style: str = "v2", local_window: int | None = None) -> VelocityFn:
    """``velocity_fn(video [B,C,T,h,w], audio [B,Na,Ca], sigma_v, sigma_a, step)`` running ``model``.

    ``text``/``negative_text``: ``[L, D]`` features. With ``guidance`` (and it active) ``negative_text`` is
    required and each step runs one forward over ``2B`` packed samples; otherwise ``B`` samples.
    ``local_window``: frames each side for local-attention layers (None: the model's ``local_frame_window``).
    """
    use_cfg = guidance is not None and guidance.active
    if use_cfg and negative_text is None:
        raise ValueError("classifier-free guidance needs the negative-prompt features (negative_text)")
    cfg = model.config
    device = next(model.parameters()).device

    def contexts(t: Tensor | None):
        return None if t is None or t.shape[0] == 0 else t.to(device)

    cond_text, uncond_text = contexts(text), contexts(negative_text)

    def velocity(video: Tensor, audio: Tensor, sigma_video: float, sigma_audio: float, step: int):
        batch = video.shape[0]
        texts = [cond_text] + ([uncond_text] if use_cfg else [])
        samples = [{"video": video[b], "audio": audio[b], **({"text": t} if t is not None else {})}
                   for t in texts for b in range(batch)]
        packed = pack_for_model(samples, cfg, coords_style).to(device)
        out = model(**packed.model_inputs(), local_window=local_window)
        parts = unpack(out, packed, audio.shape[-1])
        out_video = torch.stack([p["video"] for p in parts]).to(video.dtype)
        out_audio = torch.stack([p["audio"] for p in parts]).to(audio.dtype)
        if use_cfg:  # guidance is affine with weights summing to 1, so guiding a sample prediction is the same
            scale = video_guidance_scale(sigma_video, guidance.video, guidance.late_video, guidance.switch_timestep)
            out_video = apply_guidance(out_video[:batch], out_video[batch:], scale)
            out_audio = apply_guidance(out_audio[:batch], out_audio[batch:], guidance.audio)
        return (as_velocity(cfg.video_prediction, out_video, video, sigma_video, cfg.sample_prediction_min_sigma),
                as_velocity(cfg.audio_prediction, out_audio, audio, sigma_audio, cfg.sample_prediction_min_sigma))

    return velocity
