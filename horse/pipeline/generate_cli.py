"""``horse generate --checkpoint DIR --prompt "..." [--image PATH] [--audio PATH] [--duration S] [--fps 24]
[--seed N] [--steps N] [--guidance S] -o out.mp4``: one clip from a horse checkpoint folder.

Unset options take the checkpoint's defaults (config.json). Bad input gives one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

ERROR_TYPES = (ValueError, OSError, ImportError)
LATE_GUIDANCE_WORDS = {None: "default", "none": None}  # unset: the checkpoint's value; "none": no late switch


def _late_guidance(text: str) -> float | str:
    return "none" if text.lower() == "none" else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="horse generate", description="Generate a video with audio from a prompt.")
    p.add_argument("--checkpoint", required=True, help="horse checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--prompt", required=True)
    p.add_argument("-o", "--output", required=True, help="MP4 file to write")
    p.add_argument("--image", help="first frame (TI2V)")
    p.add_argument("--audio", help="reference audio, held clean while sampling")
    p.add_argument("--video", help="a video to add sound to (V2A): its picture is kept, only the audio is generated")
    p.add_argument("--duration", type=float, help="seconds (default: the checkpoint's shortest)")
    p.add_argument("--fps", type=float, help="output frame rate, one of the checkpoint's fps options (default: native)")
    p.add_argument("--resolution", help="a resolution name of the checkpoint or HxW")
    p.add_argument("--seed", type=int, help="random seed (default: a random one, reported)")
    p.add_argument("--sampler", choices=("unipc", "euler", "distilled"))
    p.add_argument("--steps", type=int)
    p.add_argument("--shift", type=float)
    p.add_argument("--guidance", type=float, help="guidance scale for video and audio")
    p.add_argument("--video-guidance", type=float, help="video guidance scale (overrides --guidance)")
    p.add_argument("--audio-guidance", type=float, help="audio guidance scale (overrides --guidance)")
    p.add_argument("--late-video-guidance", type=_late_guidance,
                   help="video scale after the switch timestep, or 'none' for no switch")
    p.add_argument("--negative-prompt", help="text of the unconditional pass (default: the checkpoint's)")
    p.add_argument("--motion-strength", type=float, help="0..1, if the checkpoint declares a motion template")
    p.add_argument("--audio-after-video", action=argparse.BooleanOptionalAction, default=None,
                   help="sample the audio again from the finished video (default: the checkpoint's setting)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--metadata", help="also write the generation metadata to this JSON file")
    p.add_argument("--verbose", action="store_true", help="print whole multi-line error messages")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from horse.pipeline.pipeline import Pipeline

        if args.fps is not None and args.fps.is_integer():
            args.fps = int(args.fps)
        pipe = Pipeline(args.checkpoint, args.device)
        result = pipe.generate(
            args.prompt, args.output, image=args.image, audio=args.audio, video=args.video,
            duration=args.duration, fps=args.fps,
            resolution=args.resolution, seed=args.seed, sampler=args.sampler, steps=args.steps, shift=args.shift,
            video_guidance=args.video_guidance if args.video_guidance is not None else args.guidance,
            audio_guidance=args.audio_guidance if args.audio_guidance is not None else args.guidance,
            late_video_guidance=LATE_GUIDANCE_WORDS.get(args.late_video_guidance, args.late_video_guidance),
            negative_prompt=args.negative_prompt,
            motion_strength=args.motion_strength, audio_after_video=args.audio_after_video,
            progress=not args.no_progress)
        if args.metadata:
            with open(args.metadata, "w") as fh:
                json.dump(result.metadata, fh, indent=2)
    except ERROR_TYPES as err:
        message = str(err) if args.verbose else (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"horse generate: error: {message}", file=sys.stderr)
        return 2
    m = result.metadata
    print(f"wrote {result.path}: {m['duration']:.2f} s at {m['fps']} fps, {m['resolution']['height']}x"
          f"{m['resolution']['width']}, {m['mode']}, seed {m['seed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
