"""Does the caption's shape word shape the video estimate? The one-step estimate's outline under each shape word.

    python -m eval.shape_probe CHECKPOINT [--clips 12] [--sigmas 0.2,0.4,0.6,0.8] [--seed 0] [--dataset-seed 0]

For shapes-AV test clips: noise the clean video latent to sigma and read the model's clean estimate (no guidance)
under the clip's caption with its shape word replaced by each shape in turn, from the same noisy input. Each
estimate goes through the scorer's shape detector, which reports the object's fill ratio (area over bounding box:
about 0.79 for a circle, 1.0 for a square, 0.5-0.6 for a triangle) and vertical skew (negative: wider at the
bottom, as the triangles are). The clips' own shapes are mixed, so a model that ignores the shape word gives every
word the same numbers, and one that draws the asked outline gives each word its shape's. The real clips' own
numbers are printed beside them, and the estimates under each clip's own caption grouped by its real shape: at low
noise the input itself shows the true outline, so these say whether the model keeps it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from eval.denoise_probe import check_probe_arguments, encode_clip, require_demo_codecs, run_probe, video_estimate

DEFAULT_SIGMAS = (0.2, 0.4, 0.6, 0.8)


def swap_shape(caption: str, shape: str, replacement: str) -> str:
    """``caption`` with its subject's shape word (the phrase is "<size> <colour> <shape>") replaced."""
    swapped, count = re.subn(rf"\b{re.escape(shape)}\b", replacement, caption, count=1)
    if count != 1:
        raise ValueError(f"caption {caption!r} does not name the shape {shape!r}")
    return swapped


def _outline(frames: np.ndarray, config) -> tuple[float, float]:
    from horse.metrics.shapes_av import detect_shape

    found = detect_shape(frames, config)
    if not found["found"]:
        return float("nan"), float("nan")
    return float(found["fill_ratio"]), float(found["vertical_skew"])


@torch.no_grad()
def probe(pipeline, clips: int = 12, sigmas=DEFAULT_SIGMAS, seed: int = 0, split: str = "test",
          dataset_seed: int = 0) -> dict:
    """``{"clips", "real": {shape: {"fill", "skew", "found"}}, "sigmas": {sigma: {asked shape: {...}}}, "own": {sigma:
    {clip's shape: {...}}}}``: mean outline numbers of the estimates under each asked shape word, and under each
    clip's own caption grouped by its real shape (does the estimate keep the outline the input shows?), over the
    first ``clips`` of ``split``."""
    from horse.data.shapes import ShapesConfig, make_clip
    from horse.diffusion.flow import add_noise
    from horse.pipeline.velocity import make_velocity_fn

    require_demo_codecs(pipeline, "shape probe")
    check_probe_arguments(clips, sigmas)
    config = ShapesConfig()
    shapes = list(config.shapes)
    generator = torch.Generator().manual_seed(seed)
    found = {float(s): {shape: [] for shape in shapes} for s in sigmas}  # [sigma][asked shape]: one per clip
    real, truths = {shape: [] for shape in shapes}, []
    for index in range(clips):
        frames, _, truth = make_clip(config, dataset_seed, split, index)
        truths.append(truth["shape"])
        real[truth["shape"]].append(_outline(frames, config))
        x0, layout = encode_clip(pipeline, frames, config.fps)
        velocities = {shape: make_velocity_fn(pipeline.model, pipeline.codecs.encode_text(
            swap_shape(truth["caption"], truth["shape"], shape))) for shape in shapes}
        eps = torch.randn(x0.shape, generator=generator)  # one draw per clip, shared by every word and level
        audio = torch.randn((1, layout.num_audio, layout.audio_channels), generator=generator)
        for sigma, rows in found.items():
            noisy = add_noise(x0, eps, sigma)
            for shape, velocity in velocities.items():
                rows[shape].append(_outline(video_estimate(pipeline, velocity, noisy, audio, sigma), config))

    def summary(pairs):
        values = np.asarray(pairs, float).reshape(-1, 2)
        if not np.isfinite(values).any():
            return {"fill": None, "skew": None, "found": 0.0}
        return {"fill": float(np.nanmean(values[:, 0])), "skew": float(np.nanmean(values[:, 1])),
                "found": float(np.isfinite(values[:, 0]).mean())}

    return {"clips": clips, "real": {shape: summary(rows) for shape, rows in real.items() if rows},
            "sigmas": {s: {shape: summary(rows) for shape, rows in by_shape.items()} for s, by_shape in found.items()},
            "own": {s: {shape: summary([row for row, truth in zip(by_shape[shape], truths) if truth == shape])
                        for shape in real if real[shape]} for s, by_shape in found.items()}}


def main(argv: list[str] | None = None) -> int:
    def cell(row):
        return "none found" if row["fill"] is None else f"fill {row['fill']:.2f} skew {row['skew']:+.2f}"

    def report(result, args):
        print(f"outline of the one-step video estimate under each shape word, {args.clips} clips of mixed shapes")
        print("real clips: " + "; ".join(f"{shape} {cell(row)}" for shape, row in result["real"].items()))
        for sigma, by_shape in result["sigmas"].items():
            print(f"sigma {sigma:.2f}: " + "; ".join(f"asked {shape}: {cell(row)}" for shape, row in by_shape.items()))
            print("    own caption, by the clip's shape: " + "; ".join(
                f"{shape} {cell(row)}" for shape, row in result["own"][sigma].items()))

    return run_probe(argv, "python -m eval.shape_probe", __doc__, 12, DEFAULT_SIGMAS, probe, report)


if __name__ == "__main__":
    raise SystemExit(main())
