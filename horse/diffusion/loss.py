"""Flow-matching loss ``MSE(v_hat, eps - x0)`` per modality, as a token-weighted mean (spec §9.1).

Each modality is reduced to its own mean over supervised tokens (a token is one latent position; its
error is the mean over channels), then the modality means are combined with weights. A single mean over
all elements would let the ~30x more numerous video elements drown the audio.

To stay exact under gradient accumulation and data parallelism, the loss is exposed as per-modality
``LossTerms(sum, count)``: ``sum`` is the sum of per-token mean squared errors (carries the gradient),
``count`` the number of supervised tokens. A trainer that accumulates K micro-batches on R ranks:

1. computes each micro-batch's counts up front (``count_loss_tokens``; they depend only on masks and shapes),
   sums them over micro-batches and all-reduces them over ranks -> ``total_counts``;
2. backpropagates ``combine_loss_terms(terms, config, total_counts, gradient_scale=R)`` per micro-batch
   (``gradient_scale=R`` undoes DDP's gradient averaging).
The accumulated gradient then equals that of the per-modality means over the whole global batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .objective import AUDIO_CHANNEL_DIM, VIDEO_CHANNEL_DIM, VIDEO_TIME_DIM, FlowTrainingInputs, expand_token_mask


class LossTerms(NamedTuple):
    """``sum``: float32 sum of per-token MSEs (differentiable); ``count``: float32 number of supervised tokens."""

    sum: Tensor
    count: Tensor


@dataclass
class LossConfig:
    """Per-modality weights applied to the modality means (both 1.0 by default).

    video_temporal_weight: adds ``w * mean_channels((e_t - e_{t-1})^2)`` to each video token's error, ``e``
        being the velocity error and ``t`` the latent frame (0 off, the release). The plain MSE weighs an
        error the same whether it is shared by all frames or changes from frame to frame; this term
        weighs a temporal frequency ``f`` by ``1 + w * (2 - 2 cos f)``, so misplaced motion and flicker
        cost up to ``1 + 4w`` times more while a static error costs the same (a motion emphasis in the
        spirit of VideoJAM, arXiv 2502.02492, without its extra flow target). Its minimiser is still the
        conditional mean: it changes what a finite model learns first, not what is optimal.
    """

    video_weight: float = 1.0
    audio_weight: float = 1.0
    video_temporal_weight: float = 0.0

    def __post_init__(self):
        if self.video_temporal_weight < 0:
            raise ValueError(f"video_temporal_weight must be >= 0, got {self.video_temporal_weight}")

    def weight(self, modality: str) -> float:
        weights = {"video": self.video_weight, "audio": self.audio_weight}
        if modality not in weights:
            raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(weights)}")
        return weights[modality]


def _supervised(x: Tensor, channel_dim: int, clean_mask: Tensor | None) -> Tensor | None:
    """Bool mask over the token dims of ``x`` (True = supervised), or None when every token is supervised."""
    mask = expand_token_mask(clean_mask, x, channel_dim)
    if mask is None:
        return None
    token_shape = x.shape[:channel_dim] + x.shape[channel_dim + 1 :]
    return (~mask).squeeze(channel_dim).expand(token_shape)


def count_loss_tokens(x: Tensor, channel_dim: int, clean_mask: Tensor | None = None) -> Tensor:
    """Number of supervised tokens of a latent ``x`` (float32 0-d), known before the forward pass."""
    keep = _supervised(x, channel_dim, clean_mask)
    if keep is None:
        n = x.numel() // x.shape[channel_dim]
        return torch.tensor(float(n), device=x.device)
    return keep.sum().to(torch.float32)


def temporal_difference_error(err: Tensor, channel_dim: int, time_dim: int, keep: Tensor | None) -> Tensor:
    """Per token ``mean_channels((e_t - e_{t-1})^2)`` over the token dims of ``err``; 0 on the first frame and
    where either frame of the pair is unsupervised."""
    diff = err.diff(dim=time_dim).square().mean(dim=channel_dim)
    token_time = time_dim - (time_dim > channel_dim)
    if keep is not None:
        n = diff.shape[token_time]
        diff = diff * (keep.narrow(token_time, 1, n) & keep.narrow(token_time, 0, n))
    pad = list(diff.shape)
    pad[token_time] = 1
    return torch.cat([diff.new_zeros(pad), diff], dim=token_time)


def flow_loss_terms(v_hat: Tensor, target: Tensor, channel_dim: int, clean_mask: Tensor | None = None,
                    *, temporal_weight: float = 0.0, time_dim: int | None = None) -> LossTerms:
    """Sum over supervised tokens of ``mean_channels((v_hat - target)^2)`` and the token count (fp32).

    ``temporal_weight > 0`` adds that multiple of the error's frame-to-frame difference along ``time_dim``
    (``LossConfig.video_temporal_weight``); the count is unchanged.
    """
    if v_hat.shape != target.shape:
        raise ValueError(f"prediction {tuple(v_hat.shape)} and target {tuple(target.shape)} differ in shape")
    err = v_hat.float() - target.float()
    per_token = err.square().mean(dim=channel_dim)
    keep = _supervised(target, channel_dim, clean_mask)
    if temporal_weight > 0:
        if time_dim is None:
            raise ValueError("temporal_weight needs the latent's time_dim")
        per_token = per_token + temporal_weight * temporal_difference_error(err, channel_dim, time_dim, keep)
    if keep is None:
        return LossTerms(per_token.sum(), count_loss_tokens(target, channel_dim))
    total = torch.where(keep, per_token, torch.zeros((), device=per_token.device)).sum()
    return LossTerms(total, keep.sum().to(torch.float32))


def modality_loss_terms(v_video: Tensor, v_audio: Tensor, inputs: FlowTrainingInputs,
                        config: LossConfig | None = None) -> dict[str, LossTerms]:
    """Loss terms of both modalities from the model outputs and ``prepare_flow_inputs``' result."""
    temporal = (config or LossConfig()).video_temporal_weight
    return {
        "video": flow_loss_terms(v_video, inputs.video_target, VIDEO_CHANNEL_DIM, inputs.video_clean,
                                 temporal_weight=temporal, time_dim=VIDEO_TIME_DIM),
        "audio": flow_loss_terms(v_audio, inputs.audio_target, AUDIO_CHANNEL_DIM, inputs.audio_clean),
    }


def combine_loss_terms(
    terms: Mapping[str, LossTerms],
    config: LossConfig | None = None,
    total_counts: Mapping[str, Tensor | float] | None = None,
    gradient_scale: float = 1.0,
) -> Tensor:
    """``gradient_scale * sum_m weight_m * sum_m / N_m``; N_m is ``total_counts[m]`` or the terms' own count.

    A modality with no supervised tokens contributes 0.
    """
    config = config or LossConfig()
    loss = None
    for name, term in terms.items():
        count = term.count if total_counts is None else total_counts[name]
        count = torch.as_tensor(count, dtype=torch.float32, device=term.sum.device).clamp_min(1.0)
        part = config.weight(name) * term.sum / count
        loss = part if loss is None else loss + part
    if loss is None:
        raise ValueError("no loss terms to combine")
    return loss * gradient_scale


def flow_matching_loss(
    v_video: Tensor, v_audio: Tensor, inputs: FlowTrainingInputs, config: LossConfig | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Single-step convenience: (weighted loss, detached per-modality means) for one local batch."""
    terms = modality_loss_terms(v_video, v_audio, inputs, config)
    means = {k: (t.sum / t.count.clamp_min(1.0)).detach() for k, t in terms.items()}
    return combine_loss_terms(terms, config), means
