"""The flow-matching training task: clean latents + text in, per-modality loss terms out.

One micro-batch is a list of samples ``{"video": [C, T, h, w], "audio": [Na, Ca]
(or "audio_mean"/"audio_scale" posteriors, sampled here), "text": [L, Ct]}``.
Samples of equal latent shapes are noised together; all of them go through the
DiT as one packed sequence (block-diagonal attention). The returned loss terms
are sums and token counts, so a trainer can divide by counts reduced over
gradient-accumulation steps and data-parallel ranks (a token-weighted mean per
modality, never an average of per-rank means).

Randomness, in order, from the one generator: the TI2V then V2A draws (``draw_modes``; a trainer
draws them before the forward to count the supervised tokens, then passes them in), audio
posterior samples, caption dropout, then per shape group ``prepare_flow_inputs`` (levels, then
noise). A share of 0 draws nothing. The trainer draws TREAD's token selection from the same
generator between the modes and ``compute``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from horse.diffusion.flow import as_velocity
from horse.diffusion.loss import LossConfig, LossTerms, modality_loss_terms
from horse.diffusion.objective import NoiseConfig, drop_captions, leading_frames_mask, prepare_flow_inputs
from horse.data.cache import sample_audio_latent
from horse.model.packing import PATCH, pack_for_model, unpack

MODALITY_KEYS = ("video", "audio")


@dataclass
class TaskConfig:
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    coords_style: str = "v2"
    caption_dropout: float = 0.1
    # share of samples trained as TI2V: their first latent frame stays clean and unsupervised
    ti2v_probability: float = 0.0
    # share of samples trained video-to-audio: the whole video stays clean and unsupervised, so only the
    # audio is learned, from the caption and the finished picture (teaches the sound to follow the video;
    # the sampler's ``audio_after_video`` pass relies on it). A sample drawn for both is V2A. The trainer's
    # per-modality normaliser (``count_tokens`` with the drawn modes) counts supervised tokens only.
    v2a_probability: float = 0.0

    def __post_init__(self):
        for name in ("ti2v_probability", "v2a_probability"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"objective.{name} must lie in [0, 1], got {p}")


@dataclass(frozen=True)
class SampleModes:
    """Per sample of a micro-batch: trained image-to-video (clean first frame) / video-to-audio (clean video)."""
    ti2v: list[bool]
    v2a: list[bool]


@dataclass
class StepTerms:
    terms: dict[str, LossTerms]
    metrics: dict[str, float]
    num_tokens: int


def sample_audio(sample: dict, generator: torch.Generator) -> Tensor:
    """The sample's audio latent, drawn from its cached posterior when it has one."""
    if "audio" in sample:
        return sample["audio"]
    scale = sample.get("audio_scale")
    return sample["audio_mean"] if scale is None else sample_audio_latent(sample["audio_mean"], scale, generator)


def sample_token_counts(sample: dict, patch=PATCH) -> tuple[int, int, int]:
    """(video, audio, text) tokens the sample packs into."""
    _, t, h, w = sample["video"].shape
    audio = sample["audio"] if "audio" in sample else sample["audio_mean"]
    return t // patch[0] * (h // patch[1]) * (w // patch[2]), audio.shape[0], sample["text"].shape[0]


def count_tokens(samples: list[dict], modes: SampleModes | None = None) -> dict[str, float]:
    """Supervised tokens per modality of a micro-batch, known before its forward (for count reduction):
    a TI2V sample's first latent frame and a V2A sample's whole video are clean, so not counted."""
    counts = {"video": 0.0, "audio": 0.0}
    for i, s in enumerate(samples):
        video = s["video"]
        clean = 0 if modes is None else video.shape[1] if modes.v2a[i] else 1 if modes.ti2v[i] else 0
        counts["video"] += (video.shape[1] - clean) * video.shape[2] * video.shape[3]
        audio = s["audio"] if "audio" in s else s["audio_mean"]
        counts["audio"] += audio.shape[0]
    return counts


class FlowMatchingTask:
    def __init__(self, model: torch.nn.Module, config: TaskConfig | None = None, null_text: Tensor | None = None):
        self.model = model
        self.config = config or TaskConfig()
        self.null_text = null_text
        if self.config.caption_dropout > 0 and null_text is None:
            raise ValueError("caption_dropout > 0 needs the null text features (null_text=...)")

    @staticmethod
    def _draw(p: float, batch_size: int, generator: torch.Generator) -> list[bool]:
        if p <= 0:
            return [False] * batch_size
        return (torch.rand(batch_size, generator=generator) < p).tolist()

    def draw_modes(self, batch_size: int, generator: torch.Generator) -> SampleModes:
        """The micro-batch's TI2V and V2A draws: the generator's first draws for it (see the module docstring)."""
        ti2v = self._draw(self.config.ti2v_probability, batch_size, generator)
        return SampleModes(ti2v, self._draw(self.config.v2a_probability, batch_size, generator))

    def compute(self, samples: list[dict], generator: torch.Generator, *, routing=None,
                modes: SampleModes | None = None) -> StepTerms:
        """Loss terms of one micro-batch; ``modes`` from ``draw_modes`` on the same generator (drawn here if None)."""
        if not samples:
            raise ValueError("empty micro-batch")
        if modes is None:
            modes = self.draw_modes(len(samples), generator)
        if len(modes.ti2v) != len(samples) or len(modes.v2a) != len(samples):
            raise ValueError(f"modes are drawn for {len(modes.v2a)} samples, the micro-batch has {len(samples)}")
        ti2v, v2a = modes.ti2v, modes.v2a
        audio0 = [sample_audio(s, generator) for s in samples]
        texts = [s["text"] for s in samples]
        if self.config.caption_dropout > 0:
            texts, _ = drop_captions(texts, self.null_text, self.config.caption_dropout, generator)
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault((tuple(s["video"].shape), tuple(audio0[i].shape)), []).append(i)
        noisy, prepared = [None] * len(samples), []
        for idx in groups.values():
            video0 = torch.stack([samples[i]["video"] for i in idx])
            audio = torch.stack([audio0[i] for i in idx])
            clean = None
            if any(ti2v[i] or v2a[i] for i in idx):
                frames = video0.shape[2]
                clean = leading_frames_mask(torch.tensor([ti2v[i] for i in idx]), frames) | \
                    leading_frames_mask(torch.tensor([v2a[i] for i in idx]), frames, frames)
            inputs = prepare_flow_inputs(video0, audio, self.config.noise, generator, video_clean=clean)
            prepared.append((idx, inputs))
            for j, i in enumerate(idx):
                noisy[i] = {"video": inputs.video[j], "audio": inputs.audio[j], "text": texts[i]}
        cfg = self.model.config
        packed = pack_for_model(noisy, cfg, self.config.coords_style)
        packed = packed.to(samples[0]["video"].device)
        out = self.model(**packed.model_inputs(), **({"routing": routing} if routing is not None else {}))
        preds = unpack(out, packed, audio_channels=cfg.audio_in_channels)
        terms: dict[str, LossTerms] = {}
        metrics: dict[str, float] = {}
        floor = cfg.sample_prediction_min_sigma
        for idx, inputs in prepared:
            v_video = as_velocity(cfg.video_prediction, torch.stack([preds[i]["video"] for i in idx]), inputs.video,
                                  inputs.sigma_video, floor)
            v_audio = as_velocity(cfg.audio_prediction, torch.stack([preds[i]["audio"] for i in idx]), inputs.audio,
                                  inputs.sigma_audio, floor)
            for name, t in modality_loss_terms(v_video, v_audio, inputs, self.config.loss).items():
                prev = terms.get(name)
                terms[name] = t if prev is None else LossTerms(prev.sum + t.sum, prev.count + t.count)
        for name, t in terms.items():
            metrics[f"loss_{name}"] = (t.sum.detach() / t.count.clamp_min(1)).item()
        return StepTerms(terms, metrics, packed.num_tokens)


__all__ = ["FlowMatchingTask", "SampleModes", "TaskConfig", "StepTerms", "count_tokens", "sample_audio",
           "sample_token_counts"]
