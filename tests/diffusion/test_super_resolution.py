import math

import pytest
import torch

from horse.diffusion.flow import correlate_frames
from horse.diffusion.schedules import zerosnr_alpha
from horse.diffusion.super_resolution import (
    prepare_super_resolution,
    sample_super_resolution,
    upsample_video_latent,
)


def test_trilinear_align_corners_keeps_corners_and_linear_ramps():
    t, h, w = 3, 4, 5
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    ramp = (0.5 * tt + 2.0 * yy - 1.0 * xx).float()[None, None].repeat(1, 2, 1, 1, 1)
    up = upsample_video_latent(ramp, (t, 7, 9))
    assert up.shape == (1, 2, 3, 7, 9)
    # align_corners=True maps the corner samples onto the corner samples, so a linear ramp is resampled exactly
    y = torch.linspace(0, h - 1, 7)[None, :, None]
    x = torch.linspace(0, w - 1, 9)[None, None, :]
    expected = 0.5 * torch.arange(t).float()[:, None, None] + 2.0 * y - 1.0 * x
    assert torch.allclose(up[0, 0], expected, atol=1e-5)
    with pytest.raises(ValueError):
        upsample_video_latent(ramp[0], (t, 7, 9))


def test_prepare_draws_video_noise_then_audio_noise():
    g = torch.Generator().manual_seed(0)
    video_base, audio_base = torch.randn(1, 2, 3, 2, 2, generator=g), torch.randn(1, 9, 4, generator=g)
    video, audio = prepare_super_resolution(video_base, audio_base, (4, 6), torch.Generator().manual_seed(9))
    ref = torch.Generator().manual_seed(9)
    up = upsample_video_latent(video_base, (3, 4, 6))
    eps_v, eps_a = torch.randn(up.shape, generator=ref), torch.randn(audio_base.shape, generator=ref)
    a = 0.8389
    assert torch.allclose(video, a * up + math.sqrt(1 - a * a) * eps_v, atol=2e-4)
    assert torch.allclose(audio, 0.7 * eps_a + 0.3 * audio_base, atol=1e-6)
    assert round(float(zerosnr_alpha()), 4) == a
    # an SR model trained with a frame-correlated prior re-noises with that prior (audio unchanged)
    video_c, audio_c = prepare_super_resolution(video_base, audio_base, (4, 6), torch.Generator().manual_seed(9),
                                                video_frame_correlation=0.6)
    assert torch.allclose(video_c, a * up + math.sqrt(1 - a * a) * correlate_frames(eps_v, 0.6), atol=2e-4)
    assert torch.equal(audio_c, audio)


def test_sr_stage_holds_audio_and_returns_base_audio():
    g = torch.Generator().manual_seed(1)
    video_base, audio_base = torch.randn(1, 2, 3, 2, 2, generator=g), torch.randn(1, 9, 4, generator=g)
    target = torch.randn(1, 2, 3, 4, 4, generator=g)
    frame0 = torch.randn(1, 2, 1, 4, 4, generator=g)
    seen_audio, seen_sigma, progress = [], [], []

    def fn(video, audio, sv, sa, step):
        seen_audio.append(audio.clone())
        seen_sigma.append(sa)
        # exact single-point velocity toward ``target`` (frame 0 is overwritten anyway)
        return (video - target) / sv, torch.zeros_like(audio)

    video, audio = sample_super_resolution(
        fn, video_base, audio_base, (4, 4), torch.Generator().manual_seed(2),
        video_frame0=frame0, callback=lambda i, n: progress.append((i, n)),
    )
    assert video.shape == (1, 2, 3, 4, 4)
    assert torch.allclose(video[:, :, 1:], target[:, :, 1:], atol=1e-5)
    assert torch.equal(video[:, :, :1], frame0)
    assert torch.equal(audio, audio_base)
    assert len(seen_audio) == 5 and all(torch.equal(a, seen_audio[0]) for a in seen_audio)
    assert not torch.equal(seen_audio[0], audio_base)
    assert seen_sigma == [0.7] * 5
    assert progress == [(i, 5) for i in range(1, 6)]
