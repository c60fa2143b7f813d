"""Does the caption's direction word move the video estimate? The one-step estimate under a caption and its opposite.

    python -m eval.direction_probe CHECKPOINT [--clips 16] [--sigmas 0.8,0.9,1.0] [--seed 0] [--dataset-seed 0]

For shapes-AV test clips: noise the clean video latent to sigma, read the model's clean estimate (no guidance)
once under the clip's caption and once under the same caption with the opposite direction ("up" -> "down", "up
left" -> "down right"), from the same noisy input. Each estimate's object is located per frame by the weighted
centroid of its difference from the background colour; the *separation* is the mean over frames of the first
centroid track minus the second, projected on the asked direction (pixels). A model that ignores the direction
word scores 0 at every level. The *caption-implied* separation is the same number for the mean paths of the two
captions (starts and speeds drawn as shapes-AV draws them): what the MSE-optimal estimate at sigma 1, which sees
nothing but the caption, would show. Below sigma 1 the noisy input also shows the real path (the asked one), so
a model that follows the caption less than the picture moves less than that.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from eval.denoise_probe import check_probe_arguments, encode_clip, require_demo_codecs, run_probe, video_estimate

DEFAULT_SIGMAS = (0.8, 0.9, 1.0)
REFERENCE_PATHS = 256  # simulated paths per caption for the caption-implied separation


def opposite_direction(direction: str, directions: dict) -> str:
    """The direction whose vector is the negation of ``direction``'s."""
    vector = np.asarray(directions[direction], float)
    for name, other in directions.items():
        if np.allclose(np.asarray(other, float), -vector):
            return name
    raise ValueError(f"direction {direction!r} has no opposite among {sorted(directions)}")


def swap_direction(caption: str, direction: str, replacement: str) -> str:
    """``caption`` with its motion phrase's direction replaced (the phrase is "<verb> <direction> <speed>")."""
    pattern = rf"\b(moves|travels|glides) {re.escape(direction)}\b"
    swapped, count = re.subn(pattern, rf"\1 {replacement}", caption, count=1)
    if count != 1:
        raise ValueError(f"caption {caption!r} has no motion phrase with direction {direction!r}")
    return swapped


def weighted_track(frames: np.ndarray, background) -> np.ndarray:
    """``[F, H, W, 3]`` frames -> ``[F, 2]`` (x, y) centroids of |frame - background| above its median."""
    weight = np.abs(frames.astype(np.float64) - np.asarray(background, np.float64)).sum(-1)
    weight = np.maximum(weight - np.median(weight, axis=(1, 2), keepdims=True), 0.0)
    ys, xs = np.mgrid[0:weight.shape[1], 0:weight.shape[2]]
    mass = np.maximum(weight.sum((1, 2)), 1e-9)
    return np.stack([(weight * xs).sum((1, 2)) / mass, (weight * ys).sum((1, 2)) / mass], axis=1)


def mean_path(config, truth: dict, direction: str, rng: np.random.Generator) -> np.ndarray:
    """``[F, 2]`` mean centroid track of ``REFERENCE_PATHS`` clips like ``truth`` moving ``direction``."""
    from horse.data.shapes.generate import draw_start
    from horse.data.shapes.render import centroid_offset, trajectory

    side = truth["size_px"]
    low, high = config.speeds[truth["speed"]]
    unit = np.asarray(config.directions[direction], float)
    offset = np.asarray(centroid_offset(truth["shape"], side))
    tracks = []
    for _ in range(REFERENCE_PATHS):
        boxes = trajectory(config, side, draw_start(config, side, rng), rng.uniform(low, high) * unit)["boxes"]
        tracks.append(boxes[:, :2] + offset)
    return np.mean(tracks, axis=0)


def separation(track: np.ndarray, opposite_track: np.ndarray, unit) -> float:
    """Mean over frames of (track - opposite_track) . unit."""
    return float(((track - opposite_track) @ np.asarray(unit, float)).mean())


@torch.no_grad()
def probe(pipeline, clips: int = 16, sigmas=DEFAULT_SIGMAS, seed: int = 0, split: str = "test",
          dataset_seed: int = 0) -> dict:
    """``{"clips", "caption_implied_px", "sigmas": {sigma: separation_px}}`` over the first ``clips`` of ``split``."""
    from horse.data.shapes import ShapesConfig, make_clip
    from horse.diffusion.flow import add_noise
    from horse.pipeline.velocity import make_velocity_fn

    require_demo_codecs(pipeline, "direction probe")
    check_probe_arguments(clips, sigmas)
    config = ShapesConfig()
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    found = {float(s): [] for s in sigmas}
    implied = []
    for index in range(clips):
        frames, _, truth = make_clip(config, dataset_seed, split, index)
        asked, opposite = truth["direction"], opposite_direction(truth["direction"], config.directions)
        unit = np.asarray(config.directions[asked], float)
        implied.append(separation(mean_path(config, truth, asked, rng), mean_path(config, truth, opposite, rng), unit))
        x0, layout = encode_clip(pipeline, frames, config.fps)
        velocities = [make_velocity_fn(pipeline.model, pipeline.codecs.encode_text(caption)) for caption in
                      (truth["caption"], swap_direction(truth["caption"], asked, opposite))]
        eps = torch.randn(x0.shape, generator=generator)  # one draw per clip, shared by both captions and every level
        audio = torch.randn((1, layout.num_audio, layout.audio_channels), generator=generator)
        for sigma, rows in found.items():
            noisy = add_noise(x0, eps, sigma)
            tracks = [weighted_track(video_estimate(pipeline, velocity, noisy, audio, sigma), truth["background_rgb"])
                      for velocity in velocities]
            rows.append(separation(*tracks, unit))
    return {"clips": clips, "caption_implied_px": float(np.mean(implied)),
            "sigmas": {s: float(np.mean(rows)) for s, rows in found.items()}}


def main(argv: list[str] | None = None) -> int:
    def report(result, args):
        print(f"separation of the one-step video estimate under the asked and the opposite direction, {args.clips} "
              f"clips (caption-implied: {result['caption_implied_px']:.2f} px; ignoring the word: 0)")
        for sigma, value in result["sigmas"].items():
            print(f"sigma {sigma:.2f}: {value:+.2f} px")

    return run_probe(argv, "python -m eval.direction_probe", __doc__, 16, DEFAULT_SIGMAS, probe, report)


if __name__ == "__main__":
    raise SystemExit(main())
