"""The frame-correlated noise prior: its law, its use in training noise and in every sampler's noise."""

import pytest
import torch

from horse.diffusion.flow import add_noise, correlate_frames, x0_from_velocity
from horse.diffusion.objective import NoiseConfig, prepare_flow_inputs
from horse.diffusion.samplers import initial_noise, sample_distilled
from horse.diffusion.schedules import distill_schedule


def test_correlated_noise_is_standard_normal_with_geometric_frame_correlation():
    z = torch.randn(40000, 1, 6, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = correlate_frames(z, 0.8)[:, 0, :, 0, 0]
    assert torch.allclose(noise.var(0), torch.ones(6, dtype=torch.float64), atol=0.03)
    corr = torch.corrcoef(noise.T)
    for k in (1, 2, 4):
        assert torch.allclose(corr.diagonal(k), torch.full((6 - k,), 0.8**k, dtype=torch.float64), atol=0.02)
    # the recursion n_t = c n_{t-1} + sqrt(1 - c^2) z_t, along any time dim
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    out = correlate_frames(x, 0.5, time_dim=1)
    ref = [x[:, 0]]
    for t in range(1, 3):
        ref.append(0.5 * ref[-1] + 0.75**0.5 * x[:, t])
    assert torch.allclose(out, torch.stack(ref, 1), atol=1e-6)
    assert correlate_frames(x, 0.0) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        correlate_frames(x, 1.0)
    with pytest.raises(ValueError, match="video_frame_correlation"):
        NoiseConfig(video_frame_correlation=-0.1)


def test_training_and_sampling_noise_follow_the_prior():
    shape = (3000, 1, 4, 1, 1)
    video0 = torch.zeros(shape)
    inputs = prepare_flow_inputs(video0, torch.zeros(3000, 2, 1), NoiseConfig(video_frame_correlation=0.9),
                                 torch.Generator().manual_seed(2))
    eps = inputs.video_target[:, 0, :, 0, 0]  # the target is eps - x0 = eps
    assert abs(torch.corrcoef(eps.T)[0, 1].item() - 0.9) < 0.02
    video, _ = initial_noise(shape, None, torch.Generator().manual_seed(3), video_frame_correlation=0.9)
    assert torch.equal(video, correlate_frames(torch.randn(shape, generator=torch.Generator().manual_seed(3)), 0.9))

    # the distilled sampler re-noises video with correlated noise (audio stays independent)
    def zero(video, audio, sv, sa, step):
        return torch.zeros_like(video), torch.zeros_like(audio)

    v0, a0 = torch.zeros(1, 2, 4, 2, 2), torch.zeros(1, 3, 2)
    video, audio = sample_distilled(zero, v0, a0, torch.Generator().manual_seed(4), video_frame_correlation=0.5)
    g, rv, ra = torch.Generator().manual_seed(4), v0.clone(), a0.clone()
    sig = distill_schedule().sigmas_f32
    for i in range(8):
        ev, ea = correlate_frames(torch.randn(v0.shape, generator=g), 0.5), torch.randn(a0.shape, generator=g)
        rv, ra = sig[i + 1] * ev + (1 - sig[i + 1]) * rv, sig[i + 1] * ea + (1 - sig[i + 1]) * ra
    assert torch.equal(video, rv) and torch.equal(audio, ra)


def test_velocity_from_sample_inverts_x0_from_velocity_above_the_floor():
    from horse.diffusion.flow import as_velocity, velocity_from_sample
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    sigma = torch.tensor([0.3, 0.9])
    x = add_noise(x0, eps, sigma)
    v = velocity_from_sample(x, sigma, x0, min_sigma=0.05)
    torch.testing.assert_close(v, eps - x0)
    torch.testing.assert_close(x0_from_velocity(x, sigma, v), x0)
    # below the floor the division uses the floor: a bounded, shrunken velocity instead of a blow-up
    low = add_noise(x0, eps, 0.01)
    torch.testing.assert_close(velocity_from_sample(low, 0.01, x0, min_sigma=0.05), 0.2 * (eps - x0))
    assert as_velocity("velocity", v, x, sigma, 0.05) is v
    with pytest.raises(ValueError, match="prediction"):
        as_velocity("epsilon", v, x, sigma, 0.05)
