"""Intervals and paired comparisons of horse.metrics.stats against textbook formulas."""

import math

import numpy as np
import pytest

from horse.metrics.stats import (ScoreSpec, bootstrap_mean_interval, compare_paired, pearson_interval, summarise,
                                 summarise_scores, wilson_interval)

Z95 = 1.959963984540054


def test_wilson_matches_the_closed_form():
    k, n = 37, 50
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35  # all-wrong still has an upper bound above 0


def test_bootstrap_interval_of_a_mean_is_near_the_normal_one():
    values = np.random.default_rng(1).normal(3.0, 2.0, 400)
    low, high = bootstrap_mean_interval(values)
    half = Z95 * values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.05) and high == pytest.approx(values.mean() + half,
                                                                                          abs=0.05)
    assert bootstrap_mean_interval([0.5] * 7) == (0.5, 0.5)


def test_pearson_interval_is_fisher_z():
    rng = np.random.default_rng(2)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    r = np.corrcoef(x, y)[0, 1]
    half = Z95 / math.sqrt(60 - 3)
    assert pearson_interval(x, y) == pytest.approx((math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)),
                                                   abs=1e-6)
    assert pearson_interval(x, np.ones(60)) == (None, None)


def test_summarise_scores_skips_undefined_clips():
    clips = [{"ok": 1.0, "f1": None}, {"ok": 0.0, "f1": 0.5}, {"ok": 1.0, "f1": 1.0}]
    out = summarise_scores(clips, {"acc": ScoreSpec("proportion", ("ok",)), "f1": ScoreSpec("mean", ("f1",))})
    assert out["acc"]["value"] == pytest.approx(2 / 3) and out["acc"]["n"] == 3
    assert out["f1"]["value"] == 0.75 and out["f1"]["n"] == 2
    with pytest.raises(ValueError, match="0 or 1"):
        summarise("proportion", [0.5, 1.0])
    with pytest.raises(ValueError, match="per-clip keys"):
        ScoreSpec("pearson", ("x",))


def test_paired_comparison_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(3)
    a = (rng.random(80) < 0.4).astype(float)
    b = np.where(rng.random(80) < 0.5, 1.0, a)  # B gets right what A does, plus about half of the rest
    better = compare_paired("proportion", a, b)
    assert better["difference"] == pytest.approx(b.mean() - a.mean())
    assert better["p_value"] < 0.01 and better["ci"][0] > 0
    same = compare_paired("proportion", a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_paired_pearson_comparison():
    rng = np.random.default_rng(4)
    wanted = rng.uniform(0, 1, 60)
    a = np.stack([wanted, rng.uniform(0, 1, 60)], axis=1)  # unrelated to the request
    b = np.stack([wanted, wanted + rng.normal(0, 0.1, 60)], axis=1)  # follows it
    result = compare_paired("pearson", a, b)
    assert result["difference"] > 0.7 and result["p_value"] < 0.01
    with pytest.raises(ValueError, match="same requested"):
        compare_paired("pearson", a, b[::-1])
