"""``horse init-checkpoint --preset demo -o DIR [--seed N]``: write a randomly initialised checkpoint folder."""

from __future__ import annotations

import argparse
import sys

from horse.pipeline.demo_checkpoint import INIT_PRESETS, init_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="horse init-checkpoint", description=__doc__)
    p.add_argument("--preset", default="demo", choices=INIT_PRESETS, help="model and codec preset")
    p.add_argument("-o", "--output", required=True, help="checkpoint folder to create")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = init_checkpoint(args.output, args.preset, seed=args.seed, overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"horse init-checkpoint: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {args.preset} checkpoint to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
