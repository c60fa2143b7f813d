"""Does the audio read the picture? The one-step audio estimate's beep envelope beside a clean video.

    python -m eval.audio_probe CHECKPOINT [--clips 16] [--sigmas 0.7,0.9,1.0] [--seed 0] [--dataset-seed 0]

For shapes-AV test clips the video latent is held clean and the audio noised to sigma; the model's clean audio
estimate x0 = x_t - sigma * v (no guidance) gives a loudness envelope, the latent's energy per audio token. Its
correlation over the clip's audio tokens with the real beep envelope is reported for three pairings:

- ``own``: the clip's own video, scored against its own beeps;
- ``swapped_shown``: the next test clip's video under this clip's caption, scored against the shown clip's beeps;
- ``swapped_caption``: the same estimate scored against the captioned clip's beeps.

A model that times its beeps from the picture scores high on ``own`` and ``swapped_shown``; one that times them
from the caption alone scores ``swapped_caption`` at least as high as ``swapped_shown``; an untrained one scores
near 0 everywhere. The audio probe needs the demo codecs (it builds shapes-AV clips).
"""

from __future__ import annotations

import numpy as np
import torch

from eval.denoise_probe import check_probe_arguments, encode_clip, require_demo_codecs, run_probe

DEFAULT_SIGMAS = (0.7, 0.9, 1.0)
PAIRINGS = ("own", "swapped_shown", "swapped_caption")


def envelope_correlation(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation of two envelopes over time; 0 when either is constant (no timing at all)."""
    a, b = estimate - estimate.mean(), truth - truth.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def energy(latent: torch.Tensor) -> np.ndarray:
    """``[1, Na, Ca]`` audio latent -> ``[Na]`` energy per token."""
    return latent[0].float().square().sum(-1).numpy()


@torch.no_grad()
def probe(pipeline, clips: int = 16, sigmas=DEFAULT_SIGMAS, seed: int = 0, split: str = "test",
          dataset_seed: int = 0) -> dict:
    """``{"clips", "sigmas": {sigma: {pairing: mean correlation}}}`` over the first ``clips`` (>= 2) of ``split``."""
    from horse.data.shapes import ShapesConfig, make_clip
    from horse.diffusion.flow import add_noise, x0_from_velocity
    from horse.pipeline.velocity import make_velocity_fn

    require_demo_codecs(pipeline, "audio probe")
    check_probe_arguments(clips, sigmas, min_clips=2, why=" (videos are swapped between clips)")
    config = ShapesConfig()
    data = []
    for index in range(clips):
        frames, wave, truth = make_clip(config, dataset_seed, split, index)
        video, layout = encode_clip(pipeline, frames, config.fps)
        audio = pipeline.codecs.encode_audio(wave, config.sample_rate, layout)
        data.append({"video": video, "audio": audio,
                     "envelope": energy(audio), "caption": truth["caption"]})
    generator = torch.Generator().manual_seed(seed)
    scores = {float(s): {p: [] for p in PAIRINGS} for s in sigmas}
    for index, clip in enumerate(data):
        shown = data[(index + 1) % clips]
        velocity = make_velocity_fn(pipeline.model, pipeline.codecs.encode_text(clip["caption"]))
        eps = torch.randn(clip["audio"].shape, generator=generator)  # one draw per clip, shared by every level
        for sigma, rows in scores.items():
            noisy = add_noise(clip["audio"], eps, sigma)
            for video, pairs in ((clip["video"], (("own", clip),)),
                                 (shown["video"], (("swapped_shown", shown), ("swapped_caption", clip)))):
                _, v_audio = velocity(video, noisy, 0.0, sigma, 0)
                estimate = energy(x0_from_velocity(noisy, sigma, v_audio))
                for name, target in pairs:
                    rows[name].append(envelope_correlation(estimate, target["envelope"]))
    means = {s: {p: float(np.mean(v)) for p, v in rows.items()} for s, rows in scores.items()}
    return {"clips": clips, "sigmas": means}


def main(argv: list[str] | None = None) -> int:
    def report(result, args):
        print(f"beep-envelope correlation of the one-step audio estimate beside a clean video, {args.clips} clips")
        for sigma, row in result["sigmas"].items():
            print(f"sigma {sigma:.2f}: " + ", ".join(f"{p} {row[p]:+.2f}" for p in PAIRINGS))

    return run_probe(argv, "python -m eval.audio_probe", __doc__, 16, DEFAULT_SIGMAS, probe, report)


if __name__ == "__main__":
    raise SystemExit(main())
