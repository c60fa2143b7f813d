import dataclasses

import pytest

from horse.codecs.demo import DEMO_CODEC_SPEC, DemoCodecSpec


def test_demo_rates_and_channels():
    spec = DEMO_CODEC_SPEC
    assert spec.video_fps == 8
    assert spec.audio_sample_rate == 64 * 4 * 8 == 2048
    assert (spec.video_latent_channels, spec.dit_video_in_channels) == (48, 192)
    assert spec.audio_latent_channels == 64 and spec.text_width == 128 and spec.text_max_length == 64
    assert spec.video_size_multiple == 8
    assert spec.audio_num_samples(10) == 2560 and spec.audio_num_tokens(10) == 41


def test_sample_rate_follows_fps():
    assert DemoCodecSpec(video_fps=12).audio_sample_rate == 64 * 4 * 12


def test_spec_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEMO_CODEC_SPEC.video_fps = 4
    with pytest.raises(ValueError, match="temporal stride 1"):
        DemoCodecSpec(pixel_stride=(2, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        DemoCodecSpec(video_fps=0)
