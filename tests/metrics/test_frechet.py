import numpy as np
import pytest

from horse.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats


def _spd(rng, dim):
    a = rng.standard_normal((dim, dim))
    return a @ a.T + dim * np.eye(dim)


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(6), _spd(rng, 6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_case_is_the_scalar_formula():
    # (m1 - m2)^2 + (sd1 - sd2)^2 for 1-D Gaussians
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_commuting_full_covariances_match_eigenvalue_formula():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    l1, l2 = rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 4)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T  # same eigenvectors: sqrt(S1 S2) = Q sqrt(l1 l2) Q^T
    expected = np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_stay_finite_and_non_negative():
    rank_one = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    d = frechet_distance(np.zeros(3), rank_one, np.ones(3), np.zeros((3, 3)))
    assert np.isfinite(d) and d == pytest.approx(3.0 + 14.0, rel=1e-3)  # |mu|^2 + tr(S1)


def test_features_route_equals_stats_route():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((40, 3)) + 1.0
    mu_a, s_a = gaussian_stats(a)
    assert np.allclose(s_a, np.cov(a.T)) and np.allclose(mu_a, a.mean(0))
    assert frechet_distance_from_features(a, b) == pytest.approx(frechet_distance(mu_a, s_a, *gaussian_stats(b)))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="shapes do not fit"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 4)))
