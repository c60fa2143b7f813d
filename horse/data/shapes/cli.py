"""``horse data make-shapes``: generate the shapes-AV dataset (or find it already cached) and print its folder."""

from __future__ import annotations

import argparse
import json
import time

from .config import ShapesConfig
from .dataset import DEFAULT_COUNTS, default_cache_root, make_shapes, read_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horse data make-shapes",
        description="Generate the procedural shapes-AV dataset as webdataset shards (mp4 + json) per split.",
    )
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: {default_cache_root()}/<hash of config, seed and counts>)")
    parser.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"], help="training clips")
    parser.add_argument("--val", type=int, default=DEFAULT_COUNTS["val"], help="validation clips")
    parser.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"],
                        help="test clips (in-distribution and held-out colour x shape pairs interleaved)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=ShapesConfig.num_frames, help="frames per clip")
    parser.add_argument("--fps", type=int, default=ShapesConfig.fps)
    parser.add_argument("--size", type=int, nargs=2, default=(ShapesConfig.height, ShapesConfig.width),
                        metavar=("H", "W"), help="frame height and width in pixels")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes (0 or 1: in-process)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different dataset in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ShapesConfig(num_frames=args.frames, fps=args.fps, height=args.size[0], width=args.size[1])
    start = time.perf_counter()
    root = make_shapes(args.out, args.train, args.val, args.test, args.seed, config,
                       workers=args.workers, overwrite=args.overwrite)
    manifest = read_manifest(root)
    summary = {"root": str(root), "counts": manifest["counts"], "held_out_clips": manifest["held_out_clips"],
               "generation_seconds": manifest["generation_seconds"],
               "this_call_seconds": round(time.perf_counter() - start, 3)}
    print(json.dumps(summary, indent=1))
    return 0
