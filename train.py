"""Train a horse DiT: ``python train.py`` (the CPU demo) or ``python train.py +experiment=256p``."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from train.app import PlanError, run
    try:
        run(cfg)
    except PlanError as err:
        print(f"train.py: cannot run this experiment here:\n{err}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, FileNotFoundError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
