"""Raw shard sample (``mp4`` + ``json``/``txt`` caption) -> a fixed-size clip window.

Steps: decode with PyAV (``av_io``), pick the bucket (frames, height, width) — the largest frame
count of ``ClipConfig.frame_counts`` that fits the clip and the size with the closest aspect
ratio — choose a window start, resample the video to ``fps`` by nearest frame, resize so the frame
covers the bucket (antialiased bilinear) and centre-crop, and cut the audio (resampled to
``sample_rate``) to the same window.

Bad data never raises out of ``SampleDecoder``: it returns ``None`` and counts the reason, logging
the sample key (see ``SkipSample.REASONS``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .av_io import decode_mp4, resample_audio

log = logging.getLogger(__name__)

WINDOW_POLICIES = ("start", "center", "random")
CAPTION_JSON_KEYS = ("caption", "prompt", "text")  # json fields tried in order for the caption
VIDEO_FIELDS = ("mp4", "video.mp4", "webm", "mkv", "mov", "avi")


class SkipSample(Exception):
    """A sample that cannot be used; ``reason`` is one of REASONS (the counter name)."""

    REASONS = ("corrupt_video", "no_video_field", "too_short", "missing_audio", "empty_caption", "bad_metadata",
               "unreadable_shard")

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ClipConfig:
    """Everything that decides the pixels and samples of a decoded clip (it is part of the cache hash)."""

    fps: float = 8.0
    frame_counts: tuple[int, ...] = (16,)          # window lengths to try, the largest that fits wins
    sizes: tuple[tuple[int, int], ...] = ((64, 64),)  # (height, width) buckets, closest aspect ratio wins
    sample_rate: int = 2048
    window: str = "center"                          # start | center | random (seeded by key and seed)
    seed: int = 0
    require_audio: bool = True
    require_caption: bool = True

    def __post_init__(self):
        # normalised types: 8 and 8.0 must give the same cache hash
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "frame_counts", tuple(sorted({int(f) for f in self.frame_counts}, reverse=True)))
        object.__setattr__(self, "sizes", tuple((int(h), int(w)) for h, w in self.sizes))
        if self.fps <= 0 or self.sample_rate <= 0:
            raise ValueError(f"fps and sample_rate must be > 0, got {self.fps}, {self.sample_rate}")
        if not self.frame_counts or min(self.frame_counts) < 1:
            raise ValueError(f"frame_counts must be a non-empty list of positive ints, got {self.frame_counts}")
        if not self.sizes or min(min(s) for s in self.sizes) < 1:
            raise ValueError(f"sizes must be a non-empty list of positive (height, width), got {self.sizes}")
        if self.window not in WINDOW_POLICIES:
            raise ValueError(f"window must be one of {WINDOW_POLICIES}, got {self.window!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        d["frame_counts"] = list(self.frame_counts)
        return d


@dataclass
class Clip:
    key: str
    frames: np.ndarray             # uint8 [F, H, W, 3]
    audio: np.ndarray | None       # float32 [channels, F / fps * sample_rate]
    caption: str
    meta: dict                     # the sample's json, passed through
    start: float                   # window start in the source, seconds
    fps: float
    sample_rate: int

    @property
    def bucket(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.frames.shape[:3])


def choose_size(height: int, width: int, sizes) -> tuple[int, int]:
    """The bucket size whose aspect ratio is closest (in log space) to ``height x width``."""
    ratio = np.log(height / width)
    return min(sizes, key=lambda s: abs(np.log(s[0] / s[1]) - ratio))


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[F, h, w, 3]`` -> ``[F, height, width, 3]``: scale to cover, then centre-crop."""
    f, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _window_start(key: str, cfg: ClipConfig, slack: float) -> float:
    if slack <= 0 or cfg.window == "start":
        return 0.0
    if cfg.window == "center":
        return slack / 2
    digest = hashlib.sha256(f"{cfg.seed}:{key}".encode()).digest()
    return slack * int.from_bytes(digest[:8], "little") / 2 ** 64


def caption_of(sample: dict) -> str:
    meta = sample.get("json")
    if isinstance(meta, dict):
        for name in CAPTION_JSON_KEYS:
            if isinstance(meta.get(name), str):
                return meta[name]
    text = sample.get("txt")
    return text.decode("utf-8") if isinstance(text, bytes) else (text or "")


def decode_clip(sample: dict, cfg: ClipConfig) -> Clip:
    """One raw sample (fields as bytes or decoded) -> ``Clip``; raises ``SkipSample`` for bad data."""
    key = sample.get("__key__", "?")
    meta = sample.get("json", {})
    if isinstance(meta, (bytes, str)):
        import json
        try:
            meta = json.loads(meta)
        except ValueError as e:
            raise SkipSample("bad_metadata", f"json field is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise SkipSample("bad_metadata", f"json field must be an object, got {type(meta).__name__}")
    caption = caption_of({**sample, "json": meta}).strip()
    if cfg.require_caption and not caption:
        raise SkipSample("empty_caption")
    field_name = next((f for f in VIDEO_FIELDS if f in sample), None)
    if field_name is None:
        raise SkipSample("no_video_field", f"fields are {sorted(k for k in sample if not k.startswith('__'))}")
    try:
        decoded = decode_mp4(sample[field_name], want_audio=True, sample_rate=cfg.sample_rate)
    except Exception as e:  # PyAV raises many error types for corrupt or truncated files
        raise SkipSample("corrupt_video", f"{type(e).__name__}: {e}") from None
    if cfg.require_audio and (decoded.audio is None or decoded.audio.shape[1] == 0):
        raise SkipSample("missing_audio")
    fits = [f for f in cfg.frame_counts if f / cfg.fps <= decoded.duration + 1e-6]
    if not fits:
        raise SkipSample("too_short", f"{decoded.duration:.3f} s < {min(cfg.frame_counts) / cfg.fps:.3f} s")
    frames_out = fits[0]
    length = frames_out / cfg.fps
    start = _window_start(key, cfg, decoded.duration - length)
    # nearest source frame shown at each target time (frame i is shown from i / fps)
    times = start + np.arange(frames_out) / cfg.fps
    index = np.clip(np.floor(times * decoded.fps + 1e-6).astype(int), 0, decoded.num_frames - 1)
    height, width = choose_size(decoded.frames.shape[1], decoded.frames.shape[2], cfg.sizes)
    frames = resize_crop(decoded.frames[index], height, width)
    audio = None
    if decoded.audio is not None:
        first, count = int(round(start * cfg.sample_rate)), int(round(length * cfg.sample_rate))
        audio = decoded.audio[:, first:first + count]
        if audio.shape[1] < count:  # audio stream ends early: pad silence, keep the clock
            audio = np.pad(audio, ((0, 0), (0, count - audio.shape[1])))
        audio = np.ascontiguousarray(audio, dtype=np.float32)
    return Clip(key, frames, audio, caption, meta, float(start), float(cfg.fps), int(cfg.sample_rate))


@dataclass
class SampleDecoder:
    """``decode_clip`` that turns bad data into counted, logged skips (``None``) instead of errors."""

    cfg: ClipConfig = field(default_factory=ClipConfig)
    counters: Counter = field(default_factory=Counter)

    def __call__(self, sample: dict) -> Clip | None:
        try:
            clip = decode_clip(sample, self.cfg)
        except SkipSample as e:
            self.skip(sample.get("__key__", "?"), e.reason, e.detail, sample.get("__url__"))
            return None
        self.counters["decoded"] += 1
        return clip

    def skip(self, key: str, reason: str, detail: str = "", url: str | None = None) -> None:
        self.counters[f"skipped/{reason}"] += 1
        log.warning("skipping sample %s%s: %s%s", key, f" of {url}" if url else "", reason,
                    f" ({detail})" if detail else "")

    @property
    def skipped(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("skipped/"))


# resample_audio is re-exported for callers that post-process clip audio
__all__ = ["Clip", "ClipConfig", "SampleDecoder", "SkipSample", "caption_of", "choose_size", "decode_clip",
           "resize_crop", "resample_audio"]
