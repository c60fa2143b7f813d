"""eval.shape_probe: does the video estimate take the outline the caption's shape word asks for?"""

import numpy as np
import pytest

from eval.shape_probe import main, probe, swap_shape
from horse.data.shapes import ShapesConfig, make_clip


def test_swap_shape_replaces_only_the_subjects_shape_in_every_template():
    config = ShapesConfig()
    for index in range(12):
        _, _, truth = make_clip(config, 0, "test", index)
        other = next(shape for shape in config.shapes if shape != truth["shape"])
        swapped = swap_shape(truth["caption"], truth["shape"], other)
        assert swapped != truth["caption"] and other in swapped
        assert swap_shape(swapped, other, truth["shape"]) == truth["caption"]
    with pytest.raises(ValueError, match="does not name the shape"):
        swap_shape("a red dot moves up", "circle", "square")


def test_zero_noise_gives_every_word_the_real_outline(tiny_untrained):
    """At sigma 0 every estimate is the clean clip: every asked word reads the real clips' mean outline."""
    from horse.metrics.shapes_av import detect_shape

    config = ShapesConfig()
    result = probe(tiny_untrained, clips=3, sigmas=[0.0, 1.0])
    real_fill = np.mean([detect_shape(make_clip(config, 0, "test", i)[0], config)["fill_ratio"] for i in range(3)])
    for row in result["sigmas"][0.0].values():
        assert row["found"] == 1.0 and row["fill"] == pytest.approx(real_fill, abs=0.02)
    assert set(result["sigmas"][1.0]) == set(config.shapes)
    for shape, row in result["own"][0.0].items():  # the clean input's own outline, shape by shape
        assert row["fill"] == pytest.approx(result["real"][shape]["fill"], abs=1e-9)


def test_bad_arguments_are_refused_and_the_cli_prints_every_level(tiny_untrained, capsys, monkeypatch):
    with pytest.raises(ValueError, match="clips >= 1"):
        probe(tiny_untrained, clips=0)
    monkeypatch.setattr("horse.pipeline.pipeline.Pipeline", lambda path: tiny_untrained)
    assert main(["unused", "--clips", "1", "--sigmas", "0.0,0.5"]) == 0
    out = capsys.readouterr().out
    assert "sigma 0.00:" in out and "sigma 0.50:" in out and "real clips:" in out
    assert "asked square" in out and "own caption" in out
