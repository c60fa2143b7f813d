"""Noise-level schedules: the shifted flow sigma grid and the ZeroSNR DDPM table (spec §5.2, §5.6).

Flow grid for ``n`` steps (the release's ``FlowUniPCMultistepScheduler.set_timesteps``):
``s = linspace(sigma_max, 0, n + 1)[:-1]``, ``sigma = shift * s / (1 + (shift - 1) * s)``, then a final 0.
Integer timesteps ``int64(sigma * 1000)`` are bookkeeping only (the DiT never sees them); guidance uses
them for its video-scale switch. The grid is computed with numpy in float64 like the release, so the
integer timesteps match it exactly; ``sigmas_f32`` are the float32 values its scheduler steps with.

The distilled sampler (8 steps) and the super-resolution stage (5 steps) use the same grid with fewer
steps, so ``flow_schedule(8)`` and ``flow_schedule(5)`` are the release's fixed lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = 5.0
# The release derives its largest unshifted sigma from a float32 table (1 - 1/1000 stored as float32).
BASE_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
BASE_NUM_STEPS = 32
DISTILL_NUM_STEPS = 8
SR_NUM_STEPS = 5

# ZeroSNR DDPM table (``ZeroSNRDDPMDiscretization`` in the release): beta linear in sqrt(beta).
ZEROSNR_BETA_START = 0.00085
ZEROSNR_BETA_END = 0.012
SR_NOISE_INDEX = 220  # the release's ``noise_value`` for the SR re-noising


def shift_sigma(sigma: float | np.ndarray | Tensor, shift: float = DEFAULT_SHIFT):
    """Resolution shift toward high noise: ``shift * s / (1 + (shift - 1) * s)`` (identity for shift=1)."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def timestep_from_sigma(sigma: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """Integer timestep of a sigma, truncating like the release's ``int64(sigma * 1000)``."""
    return int(np.int64(np.float64(sigma) * num_train_timesteps))


@dataclass(frozen=True)
class FlowSchedule:
    """A descending sigma list for one sampling run.

    sigmas: float64 ``[n + 1]``, from the first (noisiest) level down to the final level (0 for a full run).
    timesteps: int64 ``[n]``, ``int64(sigmas[:-1] * num_train_timesteps)``.
    """

    sigmas: Tensor
    timesteps: Tensor

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.numel())

    @property
    def sigmas_f32(self) -> Tensor:
        """The float32 sigmas the release's schedulers step with."""
        return self.sigmas.to(torch.float32)

    @classmethod
    def from_sigmas(
        cls, sigmas: list[float] | np.ndarray | Tensor, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    ) -> FlowSchedule:
        """Build a schedule from explicit levels (already shifted), e.g. a distillation chain.

        ``sigmas`` lists every level including the final one; it must be strictly decreasing within [0, 1].
        """
        arr = np.asarray(torch.as_tensor(sigmas, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
        if arr.ndim != 1 or arr.size < 2:
            raise ValueError("sigmas must be a 1-d list with at least two levels (start and final)")
        if not (np.all(np.diff(arr) < 0) and arr[0] <= 1.0 and arr[-1] >= 0.0):
            raise ValueError(f"sigmas must be strictly decreasing within [0, 1], got {arr.tolist()}")
        timesteps = (arr[:-1] * num_train_timesteps).astype(np.int64)
        return cls(sigmas=torch.from_numpy(arr.copy()), timesteps=torch.from_numpy(timesteps))


def flow_schedule(
    num_steps: int,
    shift: float = DEFAULT_SHIFT,
    sigma_max: float = BASE_SIGMA_MAX,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> FlowSchedule:
    """The release's shifted flow grid for ``num_steps`` steps, ending at sigma 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    base = np.linspace(sigma_max, 0.0, num_steps + 1)[:-1]
    shifted = shift_sigma(base, shift)
    timesteps = (shifted * num_train_timesteps).astype(np.int64)
    sigmas = np.concatenate([shifted, [0.0]])
    return FlowSchedule(sigmas=torch.from_numpy(sigmas), timesteps=torch.from_numpy(timesteps))


def distill_schedule(shift: float = DEFAULT_SHIFT) -> FlowSchedule:
    """The 8 fixed levels of the distilled (DMD-2) sampler: 0.9998, 0.9720, ..., 0.4164, then 0."""
    return flow_schedule(DISTILL_NUM_STEPS, shift)


def sr_schedule(shift: float = DEFAULT_SHIFT) -> FlowSchedule:
    """The 5 levels of the super-resolution stage: 0.9998, 0.9522, 0.8821, 0.7689, 0.5552, then 0."""
    return flow_schedule(SR_NUM_STEPS, shift)


def zerosnr_sqrt_alpha_bar(
    num_timesteps: int = NUM_TRAIN_TIMESTEPS,
    beta_start: float = ZEROSNR_BETA_START,
    beta_end: float = ZEROSNR_BETA_END,
) -> Tensor:
    """sqrt(alpha_bar) of the ZeroSNR DDPM table, float32 ``[num_timesteps]``, 1-ish at 0 and exactly 0 at the end.

    betas = linspace(sqrt(beta_start), sqrt(beta_end))**2 (float64), alpha_bar = cumprod(1 - beta); then, in
    float32 like the release, sqrt(alpha_bar) is shifted and rescaled so the last entry is 0 and the first
    is unchanged (zero terminal SNR).
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    alpha_bar = np.cumprod(1.0 - betas.numpy())
    root = torch.tensor(alpha_bar, dtype=torch.float32).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return (root - last) * (first / (first - last))


def zerosnr_alpha(
    index: int = SR_NOISE_INDEX,
    num_timesteps: int = NUM_TRAIN_TIMESTEPS,
    beta_start: float = ZEROSNR_BETA_START,
    beta_end: float = ZEROSNR_BETA_END,
) -> Tensor:
    """The signal coefficient ``a`` at a table index as a float32 0-d tensor (index 220 -> 0.8389)."""
    if not 0 <= index < num_timesteps:
        raise ValueError(f"ZeroSNR index must be in [0, {num_timesteps}), got {index}")
    return zerosnr_sqrt_alpha_bar(num_timesteps, beta_start, beta_end)[index]
