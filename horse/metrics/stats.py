"""Confidence intervals over clips and paired significance tests between two models (scipy.stats).

A score is a *statistic* of per-clip values:
- ``"proportion"``: mean of 0/1 values; Wilson score interval (``scipy.stats.binomtest``), exact for small n.
- ``"mean"``: mean of real values; percentile bootstrap over clips (``scipy.stats.bootstrap``).
- ``"pearson"``: Pearson correlation of two per-clip values (x, y); Fisher-z interval
  (``scipy.stats.pearsonr(...).confidence_interval``).

``summarise`` gives ``{"value", "ci": [low, high], "n"}`` (``None`` where undefined, e.g. a correlation of a
constant). A ``ScoreSpec`` names the statistic and the per-clip keys of one score; ``summarise_scores`` applies a
table of them to per-clip score dicts (clips where a key is None are left out of that score). ``compare_paired`` gives the difference B - A on the same clips with a paired bootstrap interval and a
paired permutation-test p-value (the two models' values of a clip are swapped at random).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # level of every interval
BOOTSTRAP_RESAMPLES = 2000  # percentile bootstrap: plenty for 2-3 significant digits of a 95% bound
PERMUTATION_RESAMPLES = 4999  # paired permutation test (sign flips); p resolution 1/5000
SEED = 0  # resampling is seeded so reports are reproducible
STATISTICS = ("proportion", "mean", "pearson")


@dataclass(frozen=True)
class ScoreSpec:
    """One reported score: ``kind`` in STATISTICS over the per-clip values under ``keys`` (two keys, x then y,
    for ``"pearson"``)."""

    kind: str
    keys: tuple
    higher_is_better: bool = True
    description: str = ""

    def __post_init__(self):
        if self.kind not in STATISTICS:
            raise ValueError(f"ScoreSpec kind must be one of {STATISTICS}, got {self.kind!r}")
        if len(self.keys) != (2 if self.kind == "pearson" else 1):
            raise ValueError(f"a {self.kind} score takes {2 if self.kind == 'pearson' else 1} per-clip keys, "
                             f"got {self.keys!r}")

    def defined(self, clip_scores: dict) -> bool:
        return all(clip_scores.get(k) is not None for k in self.keys)

    def values(self, clips: list[dict]) -> np.ndarray:
        """Per-clip values of the clips where every key is defined: [n] or [n, 2]."""
        rows = [[c[k] for k in self.keys] for c in clips if self.defined(c)]
        values = np.asarray(rows, np.float64).reshape(len(rows), len(self.keys))
        return values if self.kind == "pearson" else values[:, 0]


def summarise_scores(clips: list[dict], specs: dict[str, ScoreSpec], confidence: float = CONFIDENCE) -> dict:
    """``{name: {"value", "ci", "n", "kind", "keys", "higher_is_better", "description"}}`` over per-clip score
    dicts ``clips``."""
    return {name: {**summarise(spec.kind, spec.values(clips), confidence), "kind": spec.kind,
                   "keys": list(spec.keys), "higher_is_better": spec.higher_is_better,
                   "description": spec.description}
            for name, spec in specs.items()}


def finite_or_none(value) -> float | None:
    """A JSON-safe number: None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorised Pearson r along ``axis`` (nan where either side is constant)."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    denom = np.sqrt((xc**2).sum(axis=axis) * (yc**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=axis) / denom


def statistic(kind: str, values) -> float | None:
    """The score of per-clip ``values`` ([n], or [n, 2] columns x, y for ``"pearson"``)."""
    values = np.asarray(values, np.float64)
    if kind not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {kind!r}")
    if len(values) == 0:
        return None
    if kind == "pearson":
        _check_pairs(values)
        return finite_or_none(_pearson(values[:, 0], values[:, 1]))
    return finite_or_none(values.mean())


def _check_pairs(values: np.ndarray) -> None:
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"a pearson score needs per-clip pairs [n, 2], got shape {values.shape}")


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    ci = stats.binomtest(int(round(successes)), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_mean_interval(values, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over clips (a constant sample gives a zero-width interval)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), float(values.mean())
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pearson_interval(x, y, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Fisher-z interval of Pearson's r (None when n < 4 or a side is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    ci = stats.pearsonr(x, y).confidence_interval(confidence_level=confidence)
    return finite_or_none(ci.low), finite_or_none(ci.high)


def summarise(kind: str, values, confidence: float = CONFIDENCE) -> dict:
    """``{"value", "ci": [low, high], "n"}`` of per-clip values under statistic ``kind``."""
    values = np.asarray(values, np.float64)
    value = statistic(kind, values)
    n = int(len(values))
    if n == 0 or value is None and kind != "pearson":
        return {"value": value, "ci": [None, None], "n": n}
    if kind == "proportion":
        if np.any((values != 0) & (values != 1)):
            raise ValueError("a proportion score needs per-clip values of 0 or 1")
        low, high = wilson_interval(values.sum(), n, confidence)
    elif kind == "mean":
        low, high = bootstrap_mean_interval(values, confidence)
    else:
        low, high = pearson_interval(values[:, 0], values[:, 1], confidence)
    return {"value": value, "ci": [low, high], "n": n}


def _vectorised(kind: str):
    if kind == "pearson":
        # x (the requested value) is shared by both models; y is each model's measurement
        return lambda x, ya, yb, axis=-1: _pearson(x, yb, axis) - _pearson(x, ya, axis)
    return lambda a, b, axis=-1: b.mean(axis=axis) - a.mean(axis=axis)


def compare_paired(kind: str, a, b, confidence: float = CONFIDENCE, seed: int = SEED) -> dict:
    """Score of B minus score of A on the same clips: ``{"difference", "ci", "p_value", "n"}``.

    ``a`` and ``b`` are per-clip values of the two models in the same clip order ([n], or [n, 2] for pearson with
    column 0 the shared requested value). The interval resamples clips (paired bootstrap); the p-value is a
    two-sided paired permutation test swapping A and B within clips.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same clips for both models, got shapes {a.shape}, {b.shape}")
    n = int(len(a))
    va, vb = statistic(kind, a), statistic(kind, b)
    if n < 2 or va is None or vb is None:
        return {"difference": None if va is None or vb is None else vb - va, "ci": [None, None], "p_value": None,
                "n": n}
    rng = np.random.default_rng(seed)
    fn = _vectorised(kind)
    if kind == "pearson":
        _check_pairs(a)
        if not np.array_equal(a[:, 0], b[:, 0]):
            raise ValueError("pearson comparison needs the same requested values (column 0) for both models")
        data = (a[:, 0], a[:, 1], b[:, 1])
        idx = rng.integers(n, size=(BOOTSTRAP_RESAMPLES, n))
        boot = fn(*(d[idx] for d in data))

        def perm_stat(ya, yb, axis=-1):
            return fn(np.broadcast_to(a[:, 0], ya.shape), ya, yb, axis)

        perm_data = (a[:, 1], b[:, 1])
    else:
        idx = rng.integers(n, size=(BOOTSTRAP_RESAMPLES, n))
        boot = fn(a[idx], b[idx])
        perm_stat, perm_data = fn, (a, b)
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nan correlations of constant resamples are dropped
        low, high = np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
        test = stats.permutation_test(perm_data, perm_stat, permutation_type="samples", vectorized=True,
                                      n_resamples=PERMUTATION_RESAMPLES, alternative="two-sided", rng=rng)
    return {"difference": vb - va, "ci": [finite_or_none(low), finite_or_none(high)],
            "p_value": finite_or_none(test.pvalue), "n": n}
