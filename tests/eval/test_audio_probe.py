"""eval.audio_probe: does the audio estimate follow the clean video beside it?"""

import numpy as np
import pytest

from eval.audio_probe import PAIRINGS, envelope_correlation, main, probe


def test_envelope_correlation():
    x = np.array([0.0, 3.0, 0.0, 1.0])
    assert envelope_correlation(x, x) == pytest.approx(1.0)
    assert envelope_correlation(x, -x) == pytest.approx(-1.0)
    assert envelope_correlation(np.ones(4), x) == 0.0  # no timing at all


def test_zero_noise_returns_the_clean_audio(tiny_untrained):
    """At sigma 0 the estimate is the captioned clip's own audio: own and swapped_caption are exact, while the
    shown (next) clip's beeps fall elsewhere."""
    row = probe(tiny_untrained, clips=3, sigmas=[0.0])["sigmas"][0.0]
    assert set(row) == set(PAIRINGS)
    assert row["own"] == pytest.approx(1.0) and row["swapped_caption"] == pytest.approx(1.0)
    assert row["swapped_shown"] < 0.9


def test_bad_arguments_are_refused_and_the_cli_prints_every_level(tiny_untrained, capsys, monkeypatch):
    with pytest.raises(ValueError, match="clips >= 2"):
        probe(tiny_untrained, clips=1)
    with pytest.raises(ValueError, match="every sigma in"):
        probe(tiny_untrained, clips=2, sigmas=[1.5])
    monkeypatch.setattr("horse.pipeline.pipeline.Pipeline", lambda path: tiny_untrained)
    assert main(["unused", "--clips", "2", "--sigmas", "0.5,1.0"]) == 0
    out = capsys.readouterr().out
    assert "sigma 0.50:" in out and "sigma 1.00:" in out and "swapped_shown" in out
