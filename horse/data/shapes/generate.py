"""One shapes-AV clip from (seed, split, index): parameters, frames, audio and ground truth.

Each clip draws from its own generator ``np.random.default_rng([seed, split_id, index])``, so a clip
is the same whichever worker or order produces it. Train and val draw colour x shape pairs from the
in-distribution pairs only; test interleaves in-distribution clips with clips of the held-out pairs
(``config.test_held_out_fraction`` of them, flagged ``"held_out": true``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .captions import CAPTION_TEMPLATES, make_caption
from .config import ShapesConfig
from .render import bounce_audio, centroid_offset, motion_score, rasterise, trajectory

SPLITS = ("train", "val", "test")
GROUND_TRUTH_VERSION = 1  # bump when the meaning of a ground-truth field changes


def pair_pools(config: ShapesConfig) -> tuple[list, list]:
    """(in-distribution colour x shape pairs, held-out pairs), in a fixed order."""
    held = {tuple(p) for p in config.held_out}
    pairs = list(itertools.product(config.colours, config.shapes))
    return [p for p in pairs if p not in held], [p for p in pairs if p in held]


def is_held_out_slot(split: str, index: int, config: ShapesConfig) -> bool:
    """Test clips alternate so that exactly floor(n * fraction) of the first n are held-out."""
    if split != "test":
        return False
    frac = config.test_held_out_fraction
    return math.floor((index + 1) * frac) > math.floor(index * frac)


def draw_start(config: ShapesConfig, side: float, rng: np.random.Generator) -> list[float]:
    """Top-left (x, y) of a ``side``-px box: the middle of its free range, spread by ``config.start_spread``."""
    free = (config.width - side, config.height - side)
    return [float(f / 2 + (rng.uniform() - 0.5) * config.start_spread * f) for f in free]


def sample_params(config: ShapesConfig, seed: int, split: str, index: int) -> dict:
    """The generating parameters of clip ``index`` of ``split`` (see module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    in_dist, held = pair_pools(config)
    held_out = is_held_out_slot(split, index, config) and bool(held)
    pool = held if held_out else in_dist
    colour, shape = pool[rng.integers(len(pool))]

    def pick(names):
        names = list(names)
        return names[rng.integers(len(names))]

    size, direction, speed = pick(config.sizes), pick(config.directions), pick(config.speeds)
    background = pick(config.backgrounds)
    speed_px = float(rng.uniform(*config.speeds[speed]))
    side = config.sizes[size]
    start = draw_start(config, side, rng)
    template = int(rng.integers(len(CAPTION_TEMPLATES)))
    return {"colour": colour, "shape": shape, "size": size, "direction": direction, "speed": speed,
            "background": background, "speed_px_per_frame": speed_px, "size_px": side,
            "start_xy": start, "template": template, "held_out": held_out}


def render_clip(config: ShapesConfig, params: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(uint8 frames [F, H, W, 3], float32 audio [1, S], ground-truth dict) of one parameter set."""
    side, shape = params["size_px"], params["shape"]
    dx, dy = config.directions[params["direction"]]
    velocity = (params["speed_px_per_frame"] * dx, params["speed_px_per_frame"] * dy)
    track = trajectory(config, side, params["start_xy"], velocity)
    boxes = track["boxes"]
    centres = boxes[:, :2] + side / 2
    centroids = boxes[:, :2] + np.asarray(centroid_offset(shape, side))
    pitch_label, pitch_hz = config.pitches[shape]
    frames = rasterise(config, shape, side, boxes, config.colours[params["colour"]],
                       config.backgrounds[params["background"]])
    audio = bounce_audio(config, track["bounce_frames"], pitch_hz)
    motion = motion_score(centres, config.motion_score_max_speed)
    words = {k: params[k] for k in ("size", "colour", "shape", "direction", "speed", "background")}
    caption = make_caption({**words, "pitch": pitch_label}, motion, params["template"])
    truth = {
        "caption": caption, **words, "pitch": pitch_label, "pitch_hz": pitch_hz,
        "colour_rgb": list(config.colours[params["colour"]]),
        "background_rgb": list(config.backgrounds[params["background"]]),
        "size_px": side, "speed_px_per_frame": params["speed_px_per_frame"],
        "velocity_px_per_frame": list(velocity), "start_xy": params["start_xy"],
        "template": params["template"], "held_out": params["held_out"],
        "motion_score": motion,
        "mean_speed_px_per_frame": float(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean()),
        "boxes_xyxy": np.round(boxes, 4).tolist(),
        "centres_xy": np.round(centres, 4).tolist(),
        "centroids_xy": np.round(centroids, 4).tolist(),
        "bounces": [{**b, "contact_time_frames": round(b["contact_time_frames"], 4)} for b in track["bounces"]],
        "bounce_frames": track["bounce_frames"],
        "tone_onsets_s": [f / config.fps for f in track["bounce_frames"]],
        "tone_duration_s": config.tone_duration_s,
        "num_frames": config.num_frames, "fps": config.fps, "height": config.height, "width": config.width,
        "sample_rate": config.sample_rate, "duration_s": config.duration_s,
        "ground_truth_version": GROUND_TRUTH_VERSION,
    }
    return frames, audio, truth


def make_clip(config: ShapesConfig, seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(frames, audio, ground truth) of clip ``index`` of ``split``; truth also holds split, index, seed, key."""
    frames, audio, truth = render_clip(config, sample_params(config, seed, split, index))
    truth.update(split=split, index=int(index), seed=int(seed), key=clip_key(split, index))
    return frames, audio, truth


def clip_key(split: str, index: int) -> str:
    """webdataset ``__key__`` of a clip (no dots: webdataset splits keys from extensions at the first dot)."""
    return f"{split}_{index:07d}"


def make_sample(config: ShapesConfig, seed: int, split: str, index: int) -> dict:
    """webdataset sample {"__key__", "mp4": bytes (H.264 + AAC), "json": ground truth dict}."""
    from horse.data.av_io import encode_mp4  # imported here: PyAV is only needed to write files

    frames, audio, truth = make_clip(config, seed, split, index)
    mp4 = encode_mp4(frames, audio, config.fps, config.sample_rate, crf=config.crf, preset=config.x264_preset)
    return {"__key__": truth["key"], "mp4": mp4, "json": truth}
