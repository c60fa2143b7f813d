"""Evaluate horse checkpoints: ``python eval.py suite=shapes_av checkpoint=DIR [size=ci] [device=cuda]``.

Compare several: ``python eval.py suite=shapes_av checkpoints=[A,B]``. Config: configs/eval/eval.yaml; output:
outputs/eval/<suite>/<checkpoint name>/{results.json,report.html}. See eval/__init__.py.
"""

import hydra

from eval.runner import register_resolvers

register_resolvers()


@hydra.main(version_base=None, config_path="configs/eval", config_name="eval")
def main(cfg) -> None:
    from eval.runner import run

    run(cfg)


if __name__ == "__main__":
    main()
