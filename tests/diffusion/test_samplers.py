import math

import pytest
import torch

from horse.diffusion.guidance import classifier_free_guidance, frame_guidance_scales
from horse.diffusion.samplers import initial_noise, sample_distilled, sample_euler, sample_unipc
from horse.diffusion.schedules import distill_schedule, flow_schedule

VSHAPE, ASHAPE = (1, 2, 3, 2, 2), (1, 5, 3)


def point_velocity(target_video, target_audio):
    """Exact velocity when the data distribution is the single point (target_video, target_audio)."""

    def fn(video, audio, sigma_video, sigma_audio, step):
        return (video - target_video) / sigma_video, (audio - target_audio) / sigma_audio

    return fn


def gaussian_velocity(mu, s):
    """Exact velocity for data x0 ~ N(mu, s^2) elementwise: v = (x - E[x0 | x]) / sigma."""

    def v(x, sigma):
        a = 1 - sigma
        ex0 = mu + a * s**2 / (a**2 * s**2 + sigma**2) * (x - a * mu)
        return (x - ex0) / sigma

    def fn(video, audio, sigma_video, sigma_audio, step):
        return v(video, sigma_video), v(audio, sigma_audio)

    return fn


def gaussian_ode_solution(x_start, sigma_start, mu, s):
    """The probability-flow ODE endpoint at sigma 0 for the Gaussian toy (affine flow map)."""
    a = 1 - sigma_start
    return mu + s * (x_start - a * mu) / math.sqrt(a**2 * s**2 + sigma_start**2)


def reference_unipc(velocity, x, sigmas):
    """Straightforward float64 UniPC-bh2 (order 2, data prediction) written from the paper, for comparison.

    lambda = log(alpha / sigma) with alpha = 1 - sigma; predictor UniP-p, corrector UniC-p on every step after
    the first; warm-up order 1, lower order on the last step; the last step (sigma 0) returns the x0 estimate.
    """
    x = x.double()
    n = len(sigmas) - 1
    lam = [math.log((1 - s) / s) if s > 0 else math.inf for s in sigmas]
    m_hist, x_prev, prev_order = [], None, None
    for i in range(n):
        m = x - sigmas[i] * velocity(x, sigmas[i])
        if i > 0:  # UniC corrector of the state at sigma_i, using the new model output m
            h = lam[i] - lam[i - 1]
            hh = -h
            phi1 = math.expm1(hh)
            bh = phi1
            base = sigmas[i] / sigmas[i - 1] * x_prev - (1 - sigmas[i]) * phi1 * m_hist[-1]
            if prev_order == 1:
                corr = 0.5 * (m - m_hist[-1])
            else:
                r = (lam[i - 2] - lam[i - 1]) / h
                phi2 = phi1 / hh - 1
                phi3 = phi2 / hh - 0.5
                b = torch.tensor([phi2 / bh, 2 * phi3 / bh], dtype=torch.float64)
                rho = torch.linalg.solve(torch.tensor([[1.0, 1.0], [r, 1.0]], dtype=torch.float64), b)
                d1 = (m_hist[-2] - m_hist[-1]) / r
                corr = rho[0] * d1 + rho[1] * (m - m_hist[-1])
            x = base - (1 - sigmas[i]) * bh * corr
        m_hist.append(m)
        order = min(2, i + 1, n - i)
        x_prev = x
        if sigmas[i + 1] == 0:
            x = m
        else:
            h = lam[i + 1] - lam[i]
            phi1 = math.expm1(-h)
            x_new = sigmas[i + 1] / sigmas[i] * x - (1 - sigmas[i + 1]) * phi1 * m
            if order == 2:
                r = (lam[i - 1] - lam[i]) / h
                x_new = x_new - (1 - sigmas[i + 1]) * phi1 * 0.5 * (m_hist[-2] - m) / r
            x = x_new
        prev_order = order
    return x


def test_unipc_and_euler_recover_single_point_exactly():
    g = torch.Generator().manual_seed(0)
    tv, ta = torch.randn(VSHAPE, generator=g), torch.randn(ASHAPE, generator=g)
    v0, a0 = initial_noise(VSHAPE, ASHAPE, g)
    for sampler in (sample_unipc, sample_euler):
        video, audio = sampler(point_velocity(tv, ta), v0, a0, num_steps=12)
        assert torch.allclose(video, tv, atol=1e-5) and torch.allclose(audio, ta, atol=1e-5)


def test_unipc_matches_independent_reference():
    g = torch.Generator().manual_seed(1)
    v0, a0 = initial_noise(VSHAPE, ASHAPE, g)
    fn = gaussian_velocity(0.5, 0.3)
    sched = flow_schedule(10)  # the release grid (shift 5)
    video, audio = sample_unipc(fn, v0, a0, schedule=sched)
    sig = [float(x) for x in sched.sigmas_f32]
    ref_video = reference_unipc(lambda x, sg: fn(x, x, sg, sg, 0)[0], v0, sig)
    ref_audio = reference_unipc(lambda x, sg: fn(x, x, sg, sg, 0)[1], a0, sig)
    assert torch.allclose(video.double(), ref_video, atol=2e-5)
    assert torch.allclose(audio.double(), ref_audio, atol=2e-5)


def test_unipc_is_higher_order_than_euler():
    mu, s = 0.5, 1.0
    v0, a0 = initial_noise(VSHAPE, ASHAPE, torch.Generator().manual_seed(1))
    fn = gaussian_velocity(mu, s)
    errors = {}
    for n in (10, 20):
        sched = flow_schedule(n, shift=1.0)  # uniform grid: no coarse final jump
        exact = gaussian_ode_solution(v0.double(), float(sched.sigmas[0]), mu, s)
        for sampler in (sample_unipc, sample_euler):
            video, _ = sampler(fn, v0, a0, schedule=sched)
            errors[sampler.__name__, n] = float((video.double() - exact).abs().max())
    assert errors["sample_unipc", 20] < 0.02
    assert errors["sample_unipc", 20] < 0.2 * errors["sample_euler", 20]
    assert errors["sample_unipc", 10] / errors["sample_unipc", 20] > 3.0  # ~second order
    assert errors["sample_euler", 10] / errors["sample_euler", 20] < 2.5  # first order


def test_cfg_video_scale_switch_at_timestep_500():
    seen = []

    def cond(video, audio, sv, sa, step):
        return torch.ones_like(video), torch.ones_like(audio)

    def uncond(video, audio, sv, sa, step):
        return torch.zeros_like(video), torch.zeros_like(audio)

    guided = classifier_free_guidance(cond, uncond)

    def recording(video, audio, sv, sa, step):
        v_video, v_audio = guided(video, audio, sv, sa, step)
        seen.append((float(v_video.flatten()[0]), float(v_audio.flatten()[0])))
        return torch.zeros_like(video), torch.zeros_like(audio)

    v0, a0 = torch.zeros(VSHAPE), torch.zeros(ASHAPE)
    sample_euler(recording, v0, a0, num_steps=32)
    video_scales = [v for v, _ in seen]
    assert video_scales == [5.0] * 27 + [2.0] * 5
    assert all(a == 5.0 for _, a in seen)
    # per-frame scales broadcast over the latent frames (SR cfg trick)
    scales = frame_guidance_scales(20)
    assert scales.shape == (1, 1, 20, 1, 1)
    assert scales[0, 0, :13].eq(2.0).all() and scales[0, 0, 13:].eq(3.5).all()
    sr_guided = classifier_free_guidance(cond, uncond, video_scale=scales, late_video_scale=None)
    vv, _ = sr_guided(torch.zeros(1, 2, 20, 2, 2), torch.zeros(ASHAPE), 0.1, 0.7, 4)
    assert torch.equal(vv[0, 0, :, 0, 0], scales.flatten())


def test_distilled_recovers_point_and_draws_video_then_audio():
    g = torch.Generator().manual_seed(3)
    tv, ta = torch.randn(VSHAPE, generator=g), torch.randn(ASHAPE, generator=g)
    v0, a0 = initial_noise(VSHAPE, ASHAPE, g)
    video, audio = sample_distilled(point_velocity(tv, ta), v0, a0, torch.Generator().manual_seed(7))
    assert torch.allclose(video, tv, atol=1e-5) and torch.allclose(audio, ta, atol=1e-5)

    # zero velocity: x0_hat = x, then x <- s' * eps + (1 - s') * x with eps drawn video, then audio
    def zero(video, audio, sv, sa, step):
        return torch.zeros_like(video), torch.zeros_like(audio)

    video, audio = sample_distilled(zero, v0, a0, torch.Generator().manual_seed(11))
    ref_g = torch.Generator().manual_seed(11)
    rv, ra = v0.clone(), a0.clone()
    sig = distill_schedule().sigmas_f32
    for i in range(8):
        ev, ea = torch.randn(VSHAPE, generator=ref_g), torch.randn(ASHAPE, generator=ref_g)
        rv = sig[i + 1] * ev + (1 - sig[i + 1]) * rv
        ra = sig[i + 1] * ea + (1 - sig[i + 1]) * ra
    assert torch.equal(video, rv) and torch.equal(audio, ra)


def test_initial_noise_draws_audio_first():
    video, audio = initial_noise(VSHAPE, ASHAPE, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(audio, torch.randn(ASHAPE, generator=g))
    assert torch.equal(video, torch.randn(VSHAPE, generator=g))
    video2, none = initial_noise(VSHAPE, None, torch.Generator().manual_seed(5))
    assert none is None and torch.equal(video2, torch.randn(VSHAPE, generator=torch.Generator().manual_seed(5)))


def test_ti2v_frame_overwrite_and_held_reference_audio():
    g = torch.Generator().manual_seed(4)
    frame0 = torch.randn(1, 2, 1, 2, 2, generator=g)
    ref_audio = torch.randn(ASHAPE, generator=g)
    v0, _ = initial_noise(VSHAPE, None, g)
    calls, steps = [], []

    def fn(video, audio, sv, sa, step):
        calls.append((torch.equal(video[:, :, :1], frame0), torch.equal(audio, ref_audio), sa))
        return torch.randn(video.shape, generator=g), torch.randn(audio.shape, generator=g)

    for sampler in (sample_unipc, sample_euler):
        calls.clear()
        video, audio = sampler(
            fn, v0, ref_audio, num_steps=6, video_frame0=frame0, hold_audio=0.0,
            callback=lambda i, n: steps.append((i, n)),
        )
        assert len(calls) == 6 and all(c[0] and c[1] and c[2] == 0.0 for c in calls)
        assert torch.equal(video[:, :, :1], frame0) and torch.equal(audio, ref_audio)
        assert not torch.equal(video[:, :, 1:], v0[:, :, 1:])
    assert steps[:6] == [(i, 6) for i in range(1, 7)]
    with pytest.raises(ValueError):
        sample_euler(fn, v0, ref_audio, num_steps=2, video_frame0=torch.zeros(1, 2, 1, 3, 3))


@pytest.mark.parametrize("sampler", ["unipc", "euler", "distilled"])
def test_held_video_is_kept_as_given_and_only_the_audio_is_sampled(sampler):
    g = torch.Generator().manual_seed(6)
    finished = torch.randn(VSHAPE, generator=g)
    v_noise, a0 = initial_noise(VSHAPE, ASHAPE, g)
    seen = []

    def fn(video, audio, sv, sa, step):
        seen.append((torch.equal(video, finished), sv, sa))
        return torch.tanh(video), torch.tanh(audio)

    run = {"unipc": sample_unipc, "euler": sample_euler,
           "distilled": lambda *a, **k: sample_distilled(*a, torch.Generator().manual_seed(1), **k)}[sampler]
    video, audio = run(fn, finished, a0, num_steps=4, hold_video=0.0)
    assert torch.equal(video, finished) and not torch.equal(audio, a0)
    assert len(seen) == 4 and all(same and sv == 0.0 for same, sv, _ in seen)
    assert [sa for *_, sa in seen][0] > 0.99  # the audio starts from (near) pure noise
    with pytest.raises(ValueError, match="cannot be combined"):
        run(fn, finished, a0, num_steps=2, hold_video=0.0, hold_audio=0.0)
    with pytest.raises(ValueError, match="cannot be combined"):
        run(fn, finished, a0, num_steps=2, hold_video=0.0, video_frame0=finished[:, :, :1])


def test_same_seed_same_output_different_seed_differs():
    def fn(video, audio, sv, sa, step):
        return torch.tanh(video), torch.tanh(audio)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        v0, a0 = initial_noise(VSHAPE, ASHAPE, g)
        return sample_distilled(fn, v0, a0, g)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_bad_velocity_shape_is_reported():
    def bad(video, audio, sv, sa, step):
        return video[:, :1], audio

    with pytest.raises(ValueError, match="velocity_fn returned"):
        sample_euler(bad, torch.zeros(VSHAPE), torch.zeros(ASHAPE), num_steps=2)
