import math

import numpy as np
import pytest
import torch

from horse.codecs.demo import DEMO_CODEC_SPEC, AudioCodec, DemoAudioCodec, prepare_waveform, resample
from horse.codecs.demo.spec import REFERENCE_TONE_AMPLITUDE

SPEC = DEMO_CODEC_SPEC
SR = SPEC.audio_sample_rate
HOP = SPEC.audio_hop


@pytest.fixture
def codec():
    return DemoAudioCodec()


def rope_time_scale(num_tokens: int) -> float:
    """Spec 4.5, v2 audio coords: grid (Na,1,1), ref ((Na-1)//4+1, 1, 1), scale = (ref-1)/(size-1)."""
    if num_tokens == 1:
        return 1.0
    return ((num_tokens - 1) // 4) / (num_tokens - 1)


def tone(num_samples, rate, start_s, duration_s, freq_hz, amplitude=REFERENCE_TONE_AMPLITUDE):
    t = np.arange(num_samples) / rate
    on = (t >= start_s) & (t < start_s + duration_s)
    return torch.from_numpy(np.where(on, amplitude * np.sin(2 * np.pi * freq_hz * (t - start_s)), 0.0))


def test_round_trip_is_exact(codec):
    x = torch.randn(2, 1, SPEC.audio_num_samples(5))
    latent = codec.encode(x)
    assert latent.shape == (2, 64, 21) == (2, *codec.latent_shape(x.shape[-1]))
    assert (codec.decode(latent) - x).abs().max() < 1e-5
    x64 = x.double()
    assert (codec.decode(codec.encode(x64)) - x64).abs().max() < 1e-12
    assert isinstance(codec, AudioCodec)


def test_matches_direct_mdct_formula(codec):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3 * HOP)
    latent = codec.encode(torch.from_numpy(x)[None, None]).numpy()[0] / SPEC.audio_latent_scale
    padded = np.concatenate([np.zeros(HOP), x, np.zeros(HOP)])
    n = np.arange(2 * HOP)
    window = np.sin(np.pi * (n + 0.5) / (2 * HOP))
    for k in range(latent.shape[1]):  # frame k = padded[k*HOP : k*HOP + 2*HOP], centred on sample k*HOP
        segment = padded[k * HOP : k * HOP + 2 * HOP] * window
        for m in (0, 5, HOP - 1):
            direct = math.sqrt(2 / HOP) * np.sum(segment * np.cos(np.pi / HOP * (n + 0.5 + HOP / 2) * (m + 0.5)))
            assert latent[m, k] == pytest.approx(direct, abs=1e-10)


def test_energy_is_preserved_up_to_latent_scale(codec):
    x = torch.randn(1, 1, 7 * HOP, dtype=torch.float64)
    latent = codec.encode(x)
    assert (latent / SPEC.audio_latent_scale).square().sum().item() == pytest.approx(x.square().sum().item(), rel=1e-12)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 16, 33])
def test_token_count_for_video_frames_and_rope_alignment(codec, num_frames):
    num_tokens = SPEC.audio_num_tokens(num_frames)
    assert num_tokens == 4 * num_frames + 1
    assert codec.latent_shape(SPEC.audio_num_samples(num_frames)) == (64, num_tokens)
    assert codec.encode(torch.zeros(1, 1, SPEC.audio_num_samples(num_frames))).shape == (1, 64, num_tokens)
    assert rope_time_scale(num_tokens) == 0.25  # token 4k sits exactly at latent-video time k


def onset_token(latent, threshold=0.1):
    energy = latent[0].square().sum(0)
    return int(torch.nonzero(energy > threshold * energy.max())[0]), energy


@pytest.mark.parametrize("frame", [0, 3, 6, 11])
def test_tone_at_video_frame_k_lands_at_rope_time_k(codec, frame):
    num_frames, seconds_per_frame = 12, 1 / SPEC.video_fps
    wave = tone(SPEC.audio_num_samples(num_frames), SR, frame * seconds_per_frame, seconds_per_frame, 440.0)
    latent = codec.encode(wave[None, None])
    onset, energy = onset_token(latent)
    scale = rope_time_scale(latent.shape[-1])
    assert abs(onset * scale - frame) <= 0.5
    assert frame <= int(energy.argmax()) * scale <= frame + 1  # the tone plays during video frame k
    assert energy[: 4 * frame].sum() <= 1e-12 * energy.max()  # nothing leaks before the onset


@pytest.mark.parametrize("frame", [2, 9])
def test_alignment_survives_resampling_from_16k(frame):
    codec, rate, num_frames = DemoAudioCodec(), 16000, 12
    wave = tone(rate * num_frames // SPEC.video_fps, rate, frame / SPEC.video_fps, 0.1, 600.0).float()
    latent = codec.encode(prepare_waveform(wave[None, None], rate, num_frames))
    onset, energy = onset_token(latent)
    assert abs(onset * rope_time_scale(latent.shape[-1]) - frame) <= 0.5
    assert energy[: 4 * frame].sum() <= 1e-4 * energy.max()  # the resampler FIR smears only ~10 samples


def test_band_limited_tone_round_trips_through_resampler(codec):
    rate, num_frames = 16000, 5
    num_samples = rate * num_frames // SPEC.video_fps  # 10000 samples = 0.625 s
    t = torch.arange(num_samples, dtype=torch.float64) / rate
    wave = (0.5 * torch.sin(2 * math.pi * 300 * t) + 0.2 * torch.sin(2 * math.pi * 710 * t + 1.0))[None, None]
    at_codec_rate = prepare_waveform(wave, rate, num_frames)
    assert at_codec_rate.shape == (1, 1, SPEC.audio_num_samples(num_frames))
    back = resample(codec.decode(codec.encode(at_codec_rate)), SR, rate)
    assert back.shape == wave.shape
    interior = slice(num_samples // 10, -num_samples // 10)  # the FIR sees zeros beyond the clip ends
    assert (back - wave)[..., interior].abs().max() < 0.01


def test_latent_scale_gives_unit_rms_for_reference_tone(codec):
    for freq in (220.0, 440.0, 880.0):
        wave = tone(SPEC.audio_num_samples(8), SR, 0.0, 10.0, freq)
        latent = codec.encode(wave[None, None])[..., 1:-1]  # edge tokens see half a window
        assert latent.square().mean().sqrt().item() == pytest.approx(1.0, rel=0.05)


def test_prepare_waveform_downmixes_and_fits_length():
    stereo = torch.stack([torch.ones(3000), -torch.ones(3000) * 0.5])[None].double()  # [1, 2, 3000] at 2048 Hz
    fitted = prepare_waveform(stereo, SR, 2)
    assert fitted.shape == (1, 1, 512) and torch.allclose(fitted, torch.full_like(fitted, 0.25))
    padded = prepare_waveform(stereo, SR, 20)
    assert padded.shape == (1, 1, 5120) and padded[..., 3000:].abs().max() == 0


def test_bad_inputs_raise_clear_errors(codec):
    with pytest.raises(ValueError, match=r"\[B, channels, samples\]"):
        codec.encode(torch.zeros(1, 256))
    with pytest.raises(ValueError, match="multiple of the hop"):
        codec.encode(torch.zeros(1, 1, 100))
    with pytest.raises(ValueError, match=r"\[B, channels, samples\]"):
        codec.encode(torch.zeros(1, 1, 256, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\[B, 64, Na\]"):
        codec.decode(torch.zeros(1, 63, 5))
    with pytest.raises(ValueError, match="sample rates"):
        resample(torch.zeros(1, 1, 10), 0, SR)
