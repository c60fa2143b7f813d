import math

import numpy as np
import pytest
import torch

from horse.diffusion import flow
from horse.diffusion.schedules import (
    FlowSchedule,
    distill_schedule,
    flow_schedule,
    shift_sigma,
    sr_schedule,
    timestep_from_sigma,
    zerosnr_alpha,
    zerosnr_sqrt_alpha_bar,
)

# Spec §5.2
SPEC_T32 = [999, 993, 986, 979, 972, 964, 955, 946, 937, 927, 916, 904, 892, 879, 865, 849,
            833, 814, 795, 773, 749, 723, 694, 661, 624, 583, 535, 480, 416, 340, 249, 138]
SPEC_DISTILL = [0.9998, 0.9720, 0.9373, 0.8926, 0.8331, 0.7497, 0.6247, 0.4164, 0.0]
SPEC_SR = [0.9998, 0.9522, 0.8821, 0.7689, 0.5552, 0.0]


def test_base_32_step_timesteps_match_spec():
    sched = flow_schedule(32)
    assert sched.timesteps.dtype == torch.int64
    assert sched.timesteps.tolist() == SPEC_T32
    assert sched.num_steps == 32
    assert round(float(sched.sigmas[0]), 4) == 0.9998
    assert round(float(sched.sigmas[-2]), 4) == 0.1388
    assert float(sched.sigmas[-1]) == 0.0


@pytest.mark.parametrize("sched, expected", [(distill_schedule(), SPEC_DISTILL), (sr_schedule(), SPEC_SR)])
def test_distill_and_sr_sigma_lists_match_spec(sched, expected):
    assert [round(float(s), 4) for s in sched.sigmas] == expected


def test_grid_formula_and_shift_parameter():
    # independent recomputation of the grid with plain Python floats
    n, shift = 7, 3.0
    sched = flow_schedule(n, shift=shift, sigma_max=0.999)
    for i in range(n):
        s = 0.999 * (1 - i / n)
        assert float(sched.sigmas[i]) == pytest.approx(shift * s / (1 + (shift - 1) * s), abs=1e-12)
    assert flow_schedule(4, shift=1.0).sigmas[1].item() == pytest.approx(0.999 * 0.75, abs=1e-6)
    assert shift_sigma(0.5, 5.0) == pytest.approx(2.5 / 3.0)
    with pytest.raises(ValueError):
        shift_sigma(0.5, 0.0)
    with pytest.raises(ValueError):
        flow_schedule(0)


def test_timestep_truncates():
    assert timestep_from_sigma(0.5009) == 500
    assert timestep_from_sigma(0.9998) == 999


def test_from_sigmas_validates_and_computes_timesteps():
    sched = FlowSchedule.from_sigmas([0.9, 0.5, 0.0])
    assert sched.timesteps.tolist() == [900, 500]
    with pytest.raises(ValueError):
        FlowSchedule.from_sigmas([0.5, 0.9, 0.0])
    with pytest.raises(ValueError):
        FlowSchedule.from_sigmas([0.5])


def test_zerosnr_table():
    table = zerosnr_sqrt_alpha_bar()
    assert table.shape == (1000,)
    assert round(float(zerosnr_alpha(220)), 4) == 0.8389
    assert round(math.sqrt(1 - float(zerosnr_alpha(220)) ** 2), 4) == 0.5443
    assert float(table[999]) == 0.0
    # index 0 keeps the unrescaled value sqrt(1 - beta_0)
    assert float(table[0]) == pytest.approx(math.sqrt(1 - 0.00085), abs=1e-6)
    assert bool((table[1:] < table[:-1]).all())
    # independent float64 formula
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    root = np.sqrt(np.cumprod(1 - betas))
    rescaled = (root - root[-1]) * root[0] / (root[0] - root[-1])
    assert np.allclose(table.numpy(), rescaled, atol=1e-6)
    with pytest.raises(ValueError):
        zerosnr_alpha(1000)


def test_flow_identities():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    x = flow.add_noise(x0, eps, sigma)
    assert torch.allclose(x[1], 0.2 * x0[1] + 0.8 * eps[1])
    v = flow.velocity_target(x0, eps)
    assert torch.allclose(flow.x0_from_velocity(x, sigma, v), x0, atol=1e-6)
    assert torch.allclose(flow.eps_from_velocity(x, sigma, v), eps, atol=1e-6)
    assert torch.allclose(flow.velocity_from_x0(x, sigma, x0), v, atol=1e-5)
    with pytest.raises(ValueError):
        flow.add_noise(x0, eps, torch.tensor([0.1, 0.2, 0.3]))
