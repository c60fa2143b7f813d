"""Rectified-flow maths shared by training and sampling.

Convention (spec §5.1): sigma = 1 is pure noise, sigma = 0 is clean data.

    x_sigma = (1 - sigma) * x0 + sigma * eps        (the noisy state)
    v       = eps - x0                               (velocity, d x_sigma / d sigma; the network target)
    x0_hat  = x_sigma - sigma * v_hat
    eps_hat = x_sigma + (1 - sigma) * v_hat

``sigma`` may be a Python float, a 0-d tensor, a per-sample tensor ``[B]`` (broadcast over the
remaining dimensions of ``x``) or any tensor that broadcasts against ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

SigmaLike = float | Tensor


def broadcast_sigma(sigma: SigmaLike, like: Tensor) -> SigmaLike:
    """Reshape a per-sample sigma ``[B]`` to ``[B, 1, ..., 1]`` so it broadcasts against ``like``."""
    if not isinstance(sigma, Tensor) or sigma.ndim == 0:
        return sigma
    if sigma.ndim == 1 and like.ndim > 1:
        if sigma.shape[0] != like.shape[0]:
            raise ValueError(
                f"per-sample sigma has {sigma.shape[0]} entries but the tensor has batch size {like.shape[0]}; "
                "pass one sigma per sample (or a tensor that broadcasts against the data)"
            )
        return sigma.to(like.device).view(-1, *([1] * (like.ndim - 1)))
    try:
        torch.broadcast_shapes(sigma.shape, like.shape)
    except RuntimeError as err:
        raise ValueError(f"sigma of shape {tuple(sigma.shape)} does not broadcast to {tuple(like.shape)}") from err
    return sigma.to(like.device)


def add_noise(x0: Tensor, eps: Tensor, sigma: SigmaLike) -> Tensor:
    """The point on the straight path between data and noise: ``(1 - sigma) * x0 + sigma * eps``."""
    s = broadcast_sigma(sigma, x0)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """The regression target of the network: ``eps - x0``."""
    return eps - x0


def x0_from_velocity(x: Tensor, sigma: SigmaLike, v: Tensor) -> Tensor:
    """Clean-data estimate from a velocity prediction: ``x - sigma * v``."""
    return x - broadcast_sigma(sigma, x) * v


def velocity_from_sample(x: Tensor, sigma: SigmaLike, x0_hat: Tensor, min_sigma: float) -> Tensor:
    """Velocity from a clean-data prediction: ``(x - x0_hat) / max(sigma, min_sigma)`` (exact above the floor)."""
    s = broadcast_sigma(sigma, x)
    s = max(s, min_sigma) if not isinstance(s, Tensor) else s.clamp_min(min_sigma)
    return (x - x0_hat) / s


def as_velocity(prediction: str, output: Tensor, x: Tensor, sigma: SigmaLike, min_sigma: float) -> Tensor:
    """The model's ``output`` for noisy ``x`` at ``sigma`` as a velocity (``DiTConfig.*_prediction``)."""
    if prediction == "velocity":
        return output
    if prediction == "sample":
        return velocity_from_sample(x, sigma, output, min_sigma)
    raise ValueError(f"unknown prediction {prediction!r}; expected 'velocity' or 'sample'")


def eps_from_velocity(x: Tensor, sigma: SigmaLike, v: Tensor) -> Tensor:
    """Noise estimate from a velocity prediction: ``x + (1 - sigma) * v``."""
    return x + (1 - broadcast_sigma(sigma, x)) * v


def correlate_frames(noise: Tensor, correlation: float, time_dim: int = 2) -> Tensor:
    """Standard normal ``noise`` made an AR(1) process along ``time_dim``: ``n_0 = z_0``,
    ``n_t = c * n_{t-1} + sqrt(1 - c^2) * z_t`` (PYoCo's progressive noise prior, arXiv 2305.10474).

    Every element stays N(0, 1); frames k apart correlate ``c^k``. Neighbouring frames' noise then mostly
    cancels in their difference, so motion shows at noise levels where a single frame is still hidden.
    ``correlation`` 0 returns ``noise`` itself.
    """
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"frame noise correlation must be in [0, 1), got {correlation}")
    if correlation == 0.0:
        return noise
    frames = noise.shape[time_dim]
    t = torch.arange(frames, dtype=torch.float64)
    gain = torch.full((frames,), (1.0 - correlation**2) ** 0.5, dtype=torch.float64)
    gain[0] = 1.0
    # mix[t, s] = c^(t-s) * gain[s] for s <= t: the recursion unrolled into one matrix
    mix = torch.tril(correlation ** (t[:, None] - t[None, :]).clamp_min(0)) * gain[None, :]
    out = noise.movedim(time_dim, -1) @ mix.T.to(noise.device, noise.dtype)
    return out.movedim(-1, time_dim)


def velocity_from_x0(x: Tensor, sigma: SigmaLike, x0: Tensor) -> Tensor:
    """The velocity implied by a clean-data estimate at noise level sigma > 0: ``(x - x0) / sigma``."""
    return (x - x0) / broadcast_sigma(sigma, x)
