"""eval.direction_probe: does the video estimate move the way the caption's direction word says?"""

import numpy as np
import pytest

from eval.direction_probe import main, opposite_direction, probe, separation, swap_direction, weighted_track
from horse.data.shapes import ShapesConfig, make_clip


def test_every_direction_has_its_opposite():
    directions = ShapesConfig().directions
    pairs = {name: opposite_direction(name, directions) for name in directions}
    assert pairs["up"] == "down" and pairs["up left"] == "down right" and pairs["right"] == "left"
    assert all(pairs[pairs[name]] == name for name in directions)
    with pytest.raises(ValueError, match="no opposite"):
        opposite_direction("up", {"up": (0.0, -1.0), "right": (1.0, 0.0)})


def test_swap_direction_changes_only_the_motion_phrase_in_every_template():
    config = ShapesConfig()
    for index in range(12):
        _, _, truth = make_clip(config, 0, "test", index)
        opposite = opposite_direction(truth["direction"], config.directions)
        swapped = swap_direction(truth["caption"], truth["direction"], opposite)
        assert swapped != truth["caption"]
        assert swap_direction(swapped, opposite, truth["direction"]) == truth["caption"]
    # "up" must not match the start of "up right"
    assert swap_direction("a red dot moves up right quickly", "up right", "down left") == "a red dot moves down left quickly"
    with pytest.raises(ValueError, match="no motion phrase"):
        swap_direction("a red dot sits still", "up", "down")


def test_weighted_track_finds_a_square_on_its_background():
    frames = np.full((2, 32, 32, 3), 48, np.uint8)
    frames[0, 4:8, 10:14] = 250  # pixel centres 10..13 -> x 11.5, rows 4..7 -> y 5.5
    frames[1, 20:24, 2:6] = 250
    track = weighted_track(frames, (48, 48, 48))
    np.testing.assert_allclose(track, [[11.5, 5.5], [3.5, 21.5]], atol=1e-6)
    assert separation(track, track[::-1], (1.0, 0.0)) == pytest.approx(0.0)
    assert separation(track[:1], track[1:], (1.0, 0.0)) == pytest.approx(8.0)


def test_zero_noise_gives_no_separation_and_the_captions_imply_one(tiny_untrained):
    """At sigma 0 both estimates are the clean clip (separation 0 exactly); the two captions' mean paths part."""
    result = probe(tiny_untrained, clips=2, sigmas=[0.0, 1.0])
    assert result["sigmas"][0.0] == 0.0
    assert np.isfinite(result["sigmas"][1.0])
    assert result["caption_implied_px"] > 2.0


def test_bad_arguments_are_refused_and_the_cli_prints_every_level(tiny_untrained, capsys, monkeypatch):
    with pytest.raises(ValueError, match="clips >= 1"):
        probe(tiny_untrained, clips=0)
    with pytest.raises(ValueError, match="every sigma in"):
        probe(tiny_untrained, clips=1, sigmas=[-0.1])
    monkeypatch.setattr("horse.pipeline.pipeline.Pipeline", lambda path: tiny_untrained)
    assert main(["unused", "--clips", "1", "--sigmas", "0.5,1.0"]) == 0
    out = capsys.readouterr().out
    assert "sigma 0.50:" in out and "sigma 1.00:" in out and "caption-implied" in out
