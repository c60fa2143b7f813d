"""Does a checkpoint find the object in a noised real clip? The one-step clean estimate's centroid error per noise level.

    python -m eval.denoise_probe CHECKPOINT [--clips 12] [--sigmas 0.3,0.6,0.8,0.9,0.95] [--seed 0] [--dataset-seed 0]
                                 [--context even] [--static]

For shapes-AV test clips: noise the clean video latent to sigma (the audio is pure noise), read the model's clean
estimate x0 = x_t - sigma * v (no guidance), decode it and track the object with the shapes-AV scorer. Prints the mean
centroid error in pixels per sigma beside a static baseline: the object held at the clip's mean position. Layout and
motion are committed at high noise while sampling; there a model that follows the object along its path over the
frames beats the baseline, and one that does not stays at or above it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

DEFAULT_SIGMAS = (0.3, 0.6, 0.8, 0.9, 0.95)
CONTEXTS = ("none", "even")


def probe_parser(prog: str, doc: str, clips: int, sigmas) -> argparse.ArgumentParser:
    """The arguments every shapes-AV probe takes: checkpoint, --clips, --sigmas, --seed, --dataset-seed, --json."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", type=int, default=clips)
    parser.add_argument("--sigmas", type=parse_sigmas, default=tuple(sigmas), help="comma-separated noise levels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--dataset-seed", type=int, default=0, help="seed of the shapes-AV dataset (its default: 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def run_probe(argv, prog: str, doc: str, clips: int, sigmas, probe, report, options: dict | None = None) -> int:
    """The CLI of a probe taking the common arguments: ``probe(pipeline, clips, sigmas, seed, dataset_seed=, ...)``'s
    result as JSON with ``--json``, else ``report(result, args)`` prints it. ``options``: the probe's own flags,
    ``{"--flag": add_argument keywords}``, passed to ``probe`` as keywords under their argparse names."""
    from horse.pipeline.pipeline import Pipeline

    parser = probe_parser(prog, doc, clips, sigmas)
    extra = [parser.add_argument(flag, **kwargs).dest for flag, kwargs in (options or {}).items()]
    args = parser.parse_args(argv)
    result = probe(Pipeline(args.checkpoint), args.clips, args.sigmas, args.seed, dataset_seed=args.dataset_seed,
                   **{name: getattr(args, name) for name in extra})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)
    return 0


def video_estimate(pipeline, velocity, noisy_video: torch.Tensor, audio: torch.Tensor, sigma: float) -> np.ndarray:
    """Decoded one-step clean video estimate ``[F, H, W, 3]`` at ``sigma`` (audio at noise 1, no guidance)."""
    from horse.codecs.demo.video import video_to_frames
    from horse.diffusion.flow import x0_from_velocity

    v_video, _ = velocity(noisy_video, audio, sigma, 1.0, 0)
    return video_to_frames(pipeline.codecs.video.decode(x0_from_velocity(noisy_video, sigma, v_video)))[0].numpy()


def parse_sigmas(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def check_probe_arguments(clips: int, sigmas, min_clips: int = 1, why: str = "") -> None:
    """Refuse fewer than ``min_clips`` clips or a noise level outside [0, 1] (``why``: the reason for the minimum)."""
    if clips < min_clips or not all(0.0 <= s <= 1.0 for s in sigmas):
        raise ValueError(f"need clips >= {min_clips}{why} and every sigma in [0, 1], got clips={clips}, "
                         f"sigmas={list(sigmas)}")


def encode_clip(pipeline, frames: np.ndarray, fps: float):
    """``(video latent [1, C, F, H, W], layout)`` of a clip's ``[F, H, W, 3]`` uint8 frames through the demo codecs."""
    from horse.codecs.demo.video import frames_to_video

    layout = pipeline.codecs.layout(frames.shape[0] / fps, frames.shape[1], frames.shape[2])
    return pipeline.codecs.video.encode(frames_to_video(frames)), layout


def require_demo_codecs(pipeline, what: str) -> None:
    if pipeline.codecs.family != "demo":
        raise ValueError(f"the {what} builds shapes-AV clips through the demo codecs; this checkpoint uses "
                         f"the {pipeline.codecs.family!r} codecs")


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance over frames where both tracks have a centroid (NaN when none)."""
    d = np.linalg.norm(a - b, axis=1)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


@torch.no_grad()
def probe(pipeline, clips: int = 12, sigmas=DEFAULT_SIGMAS, seed: int = 0, split: str = "test",
          dataset_seed: int = 0, context: str = "none", static: bool = False) -> dict:
    """``{"static_px", "sigmas": {sigma: {"error_px", "found"}}, "clips", "context", "static"}`` over the first ``clips`` of ``split``
    of the default shapes-AV dataset drawn with ``dataset_seed``; ``seed`` draws the noise. ``context="even"``
    keeps the even frames clean and scores the odd frames (``static_px`` too); ``static`` holds every clip's first
    frame (``static_px`` is then 0: the all-noisy run is the reference)."""
    from horse.data.shapes import ShapesConfig, make_clip
    from horse.diffusion.flow import add_noise, correlate_frames
    from horse.metrics.shapes_av import detect_shape
    from horse.pipeline.velocity import make_velocity_fn

    require_demo_codecs(pipeline, "denoise probe")
    check_probe_arguments(clips, sigmas)
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    scored = slice(1, None, 2) if context == "even" else slice(None)  # the frames whose error counts
    config = ShapesConfig()
    generator = torch.Generator().manual_seed(seed)
    errors = {float(s): [] for s in sigmas}
    baseline = []
    for index in range(clips):
        frames, _, truth = make_clip(config, dataset_seed, split, index)
        if static:
            frames = np.repeat(frames[:1], len(frames), axis=0)
        x0, layout = encode_clip(pipeline, frames, config.fps)
        track = detect_shape(frames, config)["centroids"][scored]
        baseline.append(_mean_distance(track, np.nanmean(track, axis=0, keepdims=True)))
        velocity = make_velocity_fn(pipeline.model, pipeline.codecs.encode_text(truth["caption"]))
        # one noise draw per clip, shared by every level: a level's result does not depend on which others are asked
        eps = correlate_frames(torch.randn(x0.shape, generator=generator), pipeline.config.video_frame_correlation)
        audio = torch.randn((1, layout.num_audio, layout.audio_channels), generator=generator)
        for sigma in errors:
            noisy = add_noise(x0, eps, sigma)
            if context == "even":
                noisy[:, :, 0::2] = x0[:, :, 0::2]
            estimate = video_estimate(pipeline, velocity, noisy, audio, sigma)
            errors[sigma].append(_mean_distance(detect_shape(estimate, config)["centroids"][scored], track))
    return {"clips": clips, "static_px": float(np.nanmean(baseline)), "context": context, "static": static,
            "sigmas": {s: {"error_px": float(np.nanmean(e)) if np.isfinite(e).any() else None,
                           "found": float(np.isfinite(e).mean())} for s, e in errors.items()}}


def main(argv: list[str] | None = None) -> int:
    def report(result, args):
        print(f"static baseline (object held at its mean position): {result['static_px']:.2f} px over {args.clips} "
              "clips")
        for sigma, row in result["sigmas"].items():
            error = "none found" if row["error_px"] is None else f"{row['error_px']:.2f} px"
            print(f"sigma {sigma:.2f}: centroid error {error} (object found in {row['found']:.0%} of clips)")

    options = {"--context": dict(choices=CONTEXTS, default="none",
                                 help="even: keep the even frames clean and score the odd ones"),
               "--static": dict(action="store_true", help="hold each clip's first frame (a still object)")}
    return run_probe(argv, "python -m eval.denoise_probe", __doc__, 12, DEFAULT_SIGMAS, probe, report, options)


if __name__ == "__main__":
    raise SystemExit(main())
