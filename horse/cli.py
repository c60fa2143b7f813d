"""The ``horse`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

COMMANDS = {
    "model-info": ("horse.model.info", "parameter count, breakdown and state_dict keys of a preset"),
    "generate": ("horse.pipeline.generate_cli", "prompt (+ image, + audio) -> MP4 from a checkpoint folder"),
    "init-checkpoint": ("horse.pipeline.init_cli", "write a randomly initialised demo checkpoint folder"),
    "data": ("horse.data.cli", "datasets: 'horse data {cache,inspect,make-shapes} ...'"),
    "bench": (None, "benchmarks: 'horse bench {model,loader} ...'"),
    "export": ("train.export", "a training run's checkpoint -> a checkpoint folder (run from the repository)"),
}
BENCHES = {"model": "horse.bench.model", "loader": "horse.bench.loader"}


APP_PACKAGES = ("train", "eval")  # the repository's applications sit beside horse/ and are not installed


def _run(module: str, argv: list[str]) -> int:
    import importlib
    if module.split(".")[0] in APP_PACKAGES:
        root = str(Path(__file__).resolve().parents[1])
        if not (Path(root) / module.split(".")[0]).is_dir():
            raise FileNotFoundError(f"'{module}' is part of the horse repository's applications; run this "
                                    "command from a clone of the repository")
        if root not in sys.path:
            sys.path.insert(0, root)
    return importlib.import_module(module).main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: horse <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<18}{text}")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        if not rest or rest[0] not in BENCHES:
            print(f"usage: horse bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
            return 2
        return _run(BENCHES[rest[0]], rest[1:])
    if cmd not in COMMANDS:
        print(f"horse: unknown command {cmd!r}; run 'horse --help' for the list", file=sys.stderr)
        return 2
    try:
        return _run(COMMANDS[cmd][0], rest)
    except (ValueError, FileNotFoundError) as e:
        print(f"horse {cmd}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
