"""``horse data {cache, inspect, make-shapes}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

# Clip defaults per codec: (fps, sample rate of the clip audio handed to the codec, frame counts).
CODEC_DEFAULTS = {"demo": (8.0, 2048, "16"), "real": (25.0, 44100, "121")}


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(v) for v in s.lower().split("x")) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must look like 64x64,48x80 (HEIGHTxWIDTH), got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, help="clip frame rate (default: the codec's)")
    p.add_argument("--frames", type=_ints, help="clip lengths in frames, largest that fits wins (e.g. 16 or 16,8)")
    p.add_argument("--size", type=_sizes, default=((64, 64),), help="HEIGHTxWIDTH buckets, comma-separated")
    p.add_argument("--sample-rate", type=int, help="clip audio rate handed to the audio codec")
    p.add_argument("--window", choices=("start", "center", "random"), default="center")
    p.add_argument("--seed", type=int, default=0, help="seed of the random window choice")


def _clip_config(args, codec: str):
    from .decode import ClipConfig
    fps, rate, frames = CODEC_DEFAULTS[codec]
    return ClipConfig(fps=args.fps or fps, frame_counts=args.frames or _ints(frames), sizes=args.size,
                      sample_rate=args.sample_rate or rate, window=args.window, seed=args.seed)


def _bundle(args):
    from .cache import DemoCodecBundle, RealCodecBundle
    if args.codec == "demo":
        return DemoCodecBundle()
    missing = [n for n in ("wan_vae", "stable_audio", "t5gemma") if not getattr(args, n)]
    if missing:
        raise ValueError("--codec real needs " + ", ".join("--" + n.replace("_", "-") for n in missing))
    return RealCodecBundle.from_paths(args.wan_vae, args.stable_audio, args.t5gemma, device=args.device)


def cmd_cache(args) -> int:
    from .cache import cache_dataset
    cfg = _clip_config(args, args.codec)
    report = cache_dataset(args.inputs, args.out, _bundle(args), cfg, latent_dtype=args.latent_dtype,
                           max_count=args.max_count, overwrite=args.overwrite)
    m = report.manifest
    if report.status == "hit":
        print(f"cache {args.out} is up to date (hash {m['hash'][:16]}, {m['num_samples']} samples); nothing to do")
    else:
        skipped = {k: v for k, v in report.counters.items() if k.startswith("skipped/")}
        print(f"cached {m['num_samples']} samples into {len(m['shards'])} shards at {args.out} "
              f"(hash {m['hash'][:16]}); skipped: {skipped or 'none'}")
    return 0


def cmd_inspect(args) -> int:
    from .decode import ClipConfig
    from .inspect import format_report, inspect_dataset
    cfg = ClipConfig(fps=args.fps or CODEC_DEFAULTS["demo"][0], frame_counts=args.frames or (16,), sizes=args.size)
    report = inspect_dataset(args.shards, cfg, max_samples=args.max_samples, sheet_path=args.sheet)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="horse data", description="dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="encode shards of MP4 + caption into latent shards")
    c.add_argument("--codec", choices=sorted(CODEC_DEFAULTS), default="demo")
    c.add_argument("--in", dest="inputs", required=True, help="shards: folder, glob, brace pattern or URL")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--latent-dtype", choices=("float32", "float16"), default="float32")
    c.add_argument("--max-count", type=int, default=1000, help="samples per latent shard")
    c.add_argument("--overwrite", action="store_true", help="rebuild a cache built with other settings")
    c.add_argument("--wan-vae", help="Wan2.2_VAE.pth (--codec real)")
    c.add_argument("--stable-audio", help="Stable Audio Open folder (--codec real)")
    c.add_argument("--t5gemma", help="T5Gemma folder (--codec real)")
    c.add_argument("--device", default="cpu")
    _add_clip_args(c)
    i = sub.add_parser("inspect", help="counts, durations, resolutions, buckets, contact sheet")
    i.add_argument("shards")
    i.add_argument("--sheet", help="write a contact-sheet PNG here")
    i.add_argument("--max-samples", type=int)
    i.add_argument("--json", help="also write the report as JSON here")
    _add_clip_args(i)
    sub.add_parser("make-shapes", help="generate the procedural shapes-AV dataset (see its --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "make-shapes":
        from horse.data.shapes.cli import main as shapes_main  # written separately; imported only when asked for
        return shapes_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return {"cache": cmd_cache, "inspect": cmd_inspect}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
