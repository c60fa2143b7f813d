"""Fixtures shared by the eval tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_untrained(tmp_path_factory):
    """A Pipeline over a 2-layer random-initialised demo DiT (the probes' cheapest real checkpoint)."""
    from horse.pipeline import Pipeline, init_checkpoint

    torch.set_num_threads(1)
    model = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}
    return Pipeline(init_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model=model))
