"""Clip-length curriculum: train the first steps on the leading latent frames of each clip.

A prefix of k of T latent frames costs about k/T of the clip's tokens, so early steps see the same
number of clips for a fraction of the compute, and learn frame-to-frame motion on short, mostly
unfolded paths before they meet whole clips. Captions stay as they are: they describe the clip's
start (initial direction, colour, pitch), which a prefix keeps.

The audio is cut at the same time: with Na = r*T + 1 audio tokens on T latent frames (the demo codecs:
r = 4; the v2 audio RoPE puts token j at latent time j/r), a k-frame prefix keeps the first r*k + 1
tokens, so the audio RoPE scale and the audio-video alignment are those of a k-frame clip.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

AUDIO_KEYS = ("audio", "audio_mean", "audio_scale")


@dataclass(frozen=True)
class PrefixStage:
    """Steps ``< until_step`` (not covered by an earlier stage) train on the first ``frames`` latent frames."""

    frames: int
    until_step: int


def parse_stages(stages) -> tuple[PrefixStage, ...]:
    """Validated stages from dicts ``{frames, until_step}`` (or PrefixStage), ordered by ``until_step``."""
    out = []
    for s in stages or ():
        s = s if isinstance(s, PrefixStage) else PrefixStage(**dict(s))
        if s.frames < 1 or s.until_step < 1:
            raise ValueError(f"a prefix stage needs frames >= 1 and until_step >= 1, got {s}")
        out.append(s)
    ends = [s.until_step for s in out]
    if ends != sorted(ends) or len(set(ends)) != len(ends):
        raise ValueError(f"prefix stages must have strictly increasing until_step, got {ends}")
    return tuple(out)


def prefix_frames_at(stages: tuple[PrefixStage, ...], step: int) -> int | None:
    """Latent frames to keep at optimizer step ``step`` (None: whole clips)."""
    for s in stages:
        if step < s.until_step:
            return s.frames
    return None


def crop_prefix(sample: dict, frames: int) -> dict:
    """The sample cut to its first ``frames`` latent frames (video ``[C, T, h, w]``) and matching audio tokens.

    A clip of at most ``frames`` latent frames is returned unchanged. Audio tokens ``[Na, C]`` are kept when
    Na = r*T + 1 for an integer r (the first r*frames + 1 of them); any other count is refused, since the cut
    would no longer be a time-aligned prefix.
    """
    video: Tensor = sample["video"]
    t = video.shape[1]
    if frames >= t:
        return sample
    out = dict(sample)
    out["video"] = video[:, :frames]
    for key in AUDIO_KEYS:
        if key not in sample:
            continue
        na = sample[key].shape[0]
        if (na - 1) % t:
            raise ValueError(f"{key} has {na} tokens for {t} latent frames, not r*{t} + 1: a prefix curriculum "
                             "needs audio tokens at a whole number per latent frame; drop objective.prefix_stages")
        out[key] = sample[key][: (na - 1) // t * frames + 1]
    return out


__all__ = ["PrefixStage", "crop_prefix", "parse_stages", "prefix_frames_at"]
