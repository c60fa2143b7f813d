"""MP4 encode/decode: colours survive, timing of audio matches video, errors are clear."""

import numpy as np
import pytest

from horse.data.av_io import aac_encode_rate, decode_mp4, encode_mp4

FPS, SR = 8, 2048


def _tone(duration, onset, freq=300.0, rate=SR, amplitude=0.5):
    t = np.arange(int(round(duration * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * (t - onset)) * (t >= onset)).astype(np.float32)[None]


def _frames(n=12, h=32, w=48):
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = 200
    frames[..., 1] = (np.arange(n) * 17 % 256)[:, None, None]
    frames[..., 2] = 40
    return frames


def _onset(x, rate, threshold=0.1):
    return np.argmax(np.abs(x) > threshold) / rate


def test_roundtrip_colours_and_shapes():
    frames = _frames()
    clip = decode_mp4(encode_mp4(frames, None, FPS, None))
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.audio is None and clip.sample_rate is None
    assert clip.fps == FPS and clip.duration == pytest.approx(len(frames) / FPS)
    # flat colours survive yuv420p + crf within a few levels
    assert np.abs(clip.frames.astype(int) - frames).max() <= 4


@pytest.mark.parametrize("onset", [0.5, 0.8125])
def test_audio_onset_aligned_with_video_clock(onset):
    duration = 2.0
    frames = _frames(int(duration * FPS))
    audio = _tone(duration, onset)
    data = encode_mp4(frames, audio, FPS, SR)
    native = decode_mp4(data)  # at the stored AAC rate, no resampling on the way out
    assert native.sample_rate == aac_encode_rate(SR)
    assert abs(_onset(native.audio[0], native.sample_rate) - onset) < 0.003
    back = decode_mp4(data, sample_rate=SR)
    assert back.sample_rate == SR and back.audio.shape == (1, int(duration * SR))
    assert abs(_onset(back.audio[0], SR) - onset) < 0.003
    # the waveform itself (away from the onset click) matches closely
    body = slice(int((onset + 0.05) * SR), int((duration - 0.05) * SR))
    assert np.abs(back.audio[0, body] - audio[0, body]).max() < 0.05


def test_audio_is_cut_to_video_duration_and_stereo_kept(tmp_path):
    frames = _frames(8)  # 1 s of video
    audio = np.stack([_tone(1.5, 0.0, rate=16000)[0], -_tone(1.5, 0.0, rate=16000)[0]])  # 1.5 s of stereo audio
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(frames, audio, FPS, 16000))
    clip = decode_mp4(path)
    assert clip.audio.shape == (2, 16000)
    assert np.corrcoef(clip.audio[0, 1000:15000], clip.audio[1, 1000:15000])[0, 1] < -0.99
    assert decode_mp4(str(path), want_audio=False).audio is None


def test_fractional_fps():
    clip = decode_mp4(encode_mp4(_frames(6), None, 30000 / 1001, None))
    assert clip.fps == pytest.approx(29.97, abs=1e-3)


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        encode_mp4(np.zeros((2, 31, 48, 3), np.uint8), None, FPS, None)
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((2, 32, 48, 3), np.float32), None, FPS, None)
    with pytest.raises(ValueError, match="sample_rate"):
        encode_mp4(_frames(2), _tone(0.25, 0), FPS, None)
    with pytest.raises(FileNotFoundError):
        decode_mp4(tmp_path / "missing.mp4")
    data = encode_mp4(_frames(8), _tone(1.0, 0.2), FPS, SR)
    with pytest.raises(Exception):
        decode_mp4(data[: len(data) // 3])
    with pytest.raises(Exception):
        decode_mp4(b"definitely not an mp4")
