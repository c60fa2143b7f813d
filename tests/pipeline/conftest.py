"""A tiny demo checkpoint (2 layers) shared by the pipeline tests, and its loaded pipeline."""

import pytest
import torch

from horse.pipeline import Pipeline, init_checkpoint

TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    return init_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0, model=TINY_MODEL)


@pytest.fixture(scope="session")
def pipeline(tiny_checkpoint):
    return Pipeline(tiny_checkpoint)
