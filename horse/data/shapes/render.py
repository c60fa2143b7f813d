"""Trajectories with wall bounces, anti-aliased rasterisation and bounce tones for shapes-AV.

Geometry (image coordinates, x right, y down, pixel (i, j) covers [j, j+1) x [i, i+1)): the shape
lives in a square bounding box of side ``size`` whose top-left corner moves at constant velocity and
reflects off the frame walls, so along each axis it is a triangle wave over [0, extent - size].
Frame k shows the box at time k (in frames). The wall contact at fractional time t* is a *bounce*
when 0 < t* <= F - 1; its bounce frame is round(t*), the frame nearest the contact, which is the
frame where the shape is closest to that wall (the extreme of its track). Its tone starts at
exactly that frame's time, bounce_frame / fps seconds.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ShapesConfig


def axis_track(start: float, velocity: float, extent: float, num_frames: int):
    """Reflected 1-D motion on [0, extent]: positions [F] and contacts [(t*, wall 0 or 1)].

    Unfolded, the position is start + velocity * t; it hits a wall whenever that equals m * extent
    (wall 0 for even m, wall 1 for odd m), and the folded position is a triangle wave of period 2*extent.
    """
    if extent <= 0:
        raise ValueError(f"the shape must be smaller than the frame (free extent {extent} px)")
    times = np.arange(num_frames, dtype=np.float64)
    unfolded = np.mod(start + velocity * times, 2 * extent)
    positions = np.where(unfolded <= extent, unfolded, 2 * extent - unfolded)
    contacts = []
    if velocity != 0:
        end = start + velocity * (num_frames - 1)
        low, high = sorted((start, end))
        for m in range(math.floor(low / extent), math.ceil(high / extent) + 1):
            t = (m * extent - start) / velocity
            if 0 < t <= num_frames - 1:
                contacts.append((t, m % 2))
    return positions, sorted(contacts)


def trajectory(config: ShapesConfig, size: float, start_xy, velocity_xy) -> dict:
    """Per-frame boxes, centres and area centroids plus the bounce events of one clip."""
    xs, x_contacts = axis_track(start_xy[0], velocity_xy[0], config.width - size, config.num_frames)
    ys, y_contacts = axis_track(start_xy[1], velocity_xy[1], config.height - size, config.num_frames)
    walls = {("x", 0): "left", ("x", 1): "right", ("y", 0): "top", ("y", 1): "bottom"}
    events = [(t, walls["x", w]) for t, w in x_contacts] + [(t, walls["y", w]) for t, w in y_contacts]
    events.sort()
    bounces = [{"frame": int(math.floor(t + 0.5)), "contact_time_frames": float(t), "wall": wall}
               for t, wall in events]
    boxes = np.stack([xs, ys, xs + size, ys + size], axis=1)
    return {"boxes": boxes, "bounces": bounces,
            "bounce_frames": sorted({b["frame"] for b in bounces})}


def centroid_offset(shape: str, size: float) -> tuple[float, float]:
    """Area centroid relative to the box's top-left corner (the triangle's is 2/3 of the way down)."""
    if shape == "triangle":
        return size / 2, 2 * size / 3
    return size / 2, size / 2


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in box-normalised coordinates u, v in [0, 1] (apex-up isosceles triangle)."""
    inside_box = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if shape == "square":
        return inside_box
    if shape == "circle":
        return inside_box & ((u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25)
    if shape == "triangle":
        return inside_box & (np.abs(u - 0.5) <= v / 2)
    raise ValueError(f"unknown shape {shape!r}; expected circle, square or triangle")


def rasterise(config: ShapesConfig, shape: str, size: float, boxes: np.ndarray, colour, background) -> np.ndarray:
    """uint8 frames [F, H, W, 3]: coverage (mean of s x s sub-pixel samples) blends colour over background."""
    s = config.supersample
    offsets = (np.arange(s) + 0.5) / s
    xs = (np.arange(config.width)[:, None] + offsets[None, :]).reshape(-1)  # [W*s] sample x
    ys = (np.arange(config.height)[:, None] + offsets[None, :]).reshape(-1)  # [H*s] sample y
    u = (xs[None, None, :] - boxes[:, 0, None, None]) / size  # [F, 1, W*s]
    v = (ys[None, :, None] - boxes[:, 1, None, None]) / size  # [F, H*s, 1]
    inside = shape_mask(shape, u, v)  # [F, H*s, W*s]
    coverage = inside.reshape(len(boxes), config.height, s, config.width, s).mean(axis=(2, 4))
    colour = np.asarray(colour, np.float64)
    background = np.asarray(background, np.float64)
    pixels = background + coverage[..., None] * (colour - background)
    return np.round(pixels).astype(np.uint8)


def bounce_audio(config: ShapesConfig, bounce_frames: list[int], pitch_hz: float) -> np.ndarray:
    """Mono float32 [1, S] at config.sample_rate: a faded sine of pitch_hz from each bounce frame's time."""
    sr = config.sample_rate
    audio = np.zeros(config.num_samples, np.float64)
    length = int(round(config.tone_duration_s * sr))
    t = np.arange(length) / sr
    envelope = np.ones(length)
    fade_in, fade_out = int(round(config.tone_fade_in_s * sr)), int(round(config.tone_fade_out_s * sr))
    if fade_in:  # raised-cosine ramps: smooth enough to avoid clicks, short enough to keep onsets sharp
        envelope[:fade_in] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade_in) / fade_in)
    if fade_out:
        envelope[length - fade_out:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(fade_out) + 1) / fade_out)
    tone = config.tone_amplitude * envelope * np.sin(2 * np.pi * pitch_hz * t)
    for frame in bounce_frames:
        onset = int(round(frame / config.fps * sr))
        piece = tone[: max(0, len(audio) - onset)]
        audio[onset: onset + len(piece)] += piece
    return np.clip(audio, -1.0, 1.0).astype(np.float32)[None]


def motion_score(centres: np.ndarray, max_speed: float) -> float:
    """round(clip(mean_k |c[k+1] - c[k]| / max_speed, 0, 1), 1): measured speed in px/frame on a 0..1 scale."""
    if len(centres) < 2:
        return 0.0
    mean_speed = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean())
    return round(min(max(mean_speed / max_speed, 0.0), 1.0), 1)
