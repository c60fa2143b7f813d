import numpy as np
import pytest
import torch

from horse.codecs.demo import DEMO_CODEC_SPEC, DemoVideoCodec, VideoCodec, frames_to_video, video_to_frames


@pytest.fixture
def codec():
    return DemoVideoCodec()


def test_round_trip_is_exact(codec):
    video = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    latent = codec.encode(video)
    assert latent.shape == (2, 48, 5, 4, 6) == (2, *codec.latent_shape(5, 16, 24))
    assert torch.equal(codec.decode(latent), video)


def test_channel_order_is_rgb_then_dy_then_dx(codec):
    video = torch.randn(1, 3, 2, 8, 16)
    latent = codec.encode(video)
    for c in range(3):
        for dy in range(4):
            for dx in range(4):
                expected = video[:, c, :, dy::4, dx::4]
                assert torch.equal(latent[:, c * 16 + dy * 4 + dx], expected)


def test_channel_counts_match_dit_demo_preset(codec):
    assert codec.latent_channels == DEMO_CODEC_SPEC.video_latent_channels == 48
    assert DEMO_CODEC_SPEC.dit_video_in_channels == 192
    assert isinstance(codec, VideoCodec)


def test_uint8_frames_round_trip_through_codec(codec):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 8, 16, 3), dtype=np.uint8)
    video = frames_to_video(frames)
    assert video.shape == (1, 3, 3, 8, 16) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    # pixel (f, y, x, c) -> video[0, c, f, y, x] = value / 127.5 - 1
    assert video[0, 2, 1, 5, 7].item() == pytest.approx(frames[1, 5, 7, 2] / 127.5 - 1, abs=1e-6)
    back = video_to_frames(codec.decode(codec.encode(video)))
    assert back.dtype == torch.uint8 and torch.equal(back[0], torch.from_numpy(frames))
    assert torch.equal(video_to_frames(video[0]), torch.from_numpy(frames))


def test_video_to_frames_clamps_out_of_range_values():
    video = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 1, 5).expand(1, 3, 1, 1, 5)
    assert video_to_frames(video)[0, 0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("shape", [(1, 3, 2, 12, 16), (1, 3, 2, 16, 20), (1, 3, 2, 4, 8)])
def test_sizes_not_multiple_of_8_are_rejected(codec, shape):
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.zeros(shape))


def test_bad_inputs_raise_clear_errors(codec):
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        codec.encode(torch.zeros(3, 2, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        codec.encode(torch.zeros(1, 4, 2, 8, 8))
    with pytest.raises(ValueError, match="float"):
        codec.encode(torch.zeros(1, 3, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="48"):
        codec.decode(torch.zeros(1, 47, 2, 2, 2))
    with pytest.raises(ValueError, match="uint8"):
        frames_to_video(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        frames_to_video(np.zeros((2, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames must be >= 1"):
        codec.latent_shape(0, 8, 8)
