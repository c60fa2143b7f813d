"""Frechet distance between two Gaussians fitted to feature sets (FVD, FAD, FID all reduce to this).

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

The matrix square root is ``scipy.linalg.sqrtm``. As the common FID/FVD code does, when the product is
near-singular (the root comes back non-finite) ``eps * I`` is added to both covariances, and a small imaginary
part left by round-off is dropped (a large one is an error: the inputs are not covariance matrices).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

SQRTM_EPS = 1e-6          # diagonal offset added to both covariances when their product's root is not finite
IMAG_TOLERANCE = 1e-3     # largest |imaginary part| of the root's diagonal accepted as round-off


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` features -> (mean ``[D]``, unbiased covariance ``[D, D]``); needs N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"expected features [N, D] with N >= 2 samples, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SQRTM_EPS) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu1.shape != mu2.shape or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"shapes do not fit: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, "
                         f"sigma2 {sigma2.shape}; expected [D], [D], [D, D], [D, D]")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(dim) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = np.max(np.abs(np.diagonal(covmean).imag))
        if worst > IMAG_TOLERANCE:
            raise ValueError(f"the covariance product has a square root with imaginary part {worst:.3g}: "
                             "the inputs are not symmetric positive semi-definite covariances")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(features_a, features_b, eps: float = SQRTM_EPS) -> float:
    """Frechet distance between Gaussians fitted to two ``[N, D]`` feature sets."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b), eps=eps)


__all__ = ["frechet_distance", "frechet_distance_from_features", "gaussian_stats"]
