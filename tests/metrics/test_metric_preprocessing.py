"""Metric input preprocessing against hand-computed or independently written references (no weights needed)."""

import numpy as np
import pytest
import torch

from horse.metrics.clip_score import CLIP_MEAN, CLIP_STD, clip_preprocess, sample_frame_indices
from horse.metrics.fad import mel_matrix, vggish_log_mel
from horse.metrics.fvd import preprocess_i3d, same_padding
from horse.metrics.sync import mfcc


def test_clip_preprocess_constant_image_is_the_normalised_colour():
    img = np.zeros((300, 500, 3), np.uint8)
    img[...] = (255, 128, 0)
    x = clip_preprocess(img)
    assert x.shape == (1, 3, 224, 224)
    for c, v in enumerate((255, 128, 0)):
        assert torch.allclose(x[0, c], torch.tensor((v / 255 - CLIP_MEAN[c]) / CLIP_STD[c]), atol=1e-6)


def test_clip_preprocess_resizes_the_short_side_then_centre_crops():
    # 224 x 448 image: no resize on the short side, crop columns 112..335; left quarter red, right quarter blue.
    img = np.zeros((224, 448, 3), np.uint8)
    img[:, :112] = (255, 0, 0)
    img[:, 336:] = (0, 0, 255)
    img[:, 112:336] = (0, 255, 0)
    x = clip_preprocess(img)
    green = torch.tensor([(0 - CLIP_MEAN[0]) / CLIP_STD[0], (1 - CLIP_MEAN[1]) / CLIP_STD[1],
                          (0 - CLIP_MEAN[2]) / CLIP_STD[2]])
    assert torch.allclose(x[0].permute(1, 2, 0), green.expand(224, 224, 3), atol=1e-6)


def test_clip_preprocess_matches_transformers_clip_image_processor():
    from transformers import CLIPImageProcessor

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    ours = clip_preprocess(img)
    theirs = CLIPImageProcessor()(images=img, return_tensors="pt")["pixel_values"]  # openai CLIP defaults
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 0.02  # both PIL bicubic; rounding of the uint8 resize may differ by 1


def test_sample_frame_indices():
    assert sample_frame_indices(8, 8).tolist() == list(range(8))
    assert sample_frame_indices(25, 5).tolist() == [0, 6, 12, 18, 24]
    assert sample_frame_indices(3, 8).tolist() == [0, 1, 2]


def test_i3d_preprocess_scales_to_minus_one_one_and_resizes():
    frames = np.zeros((2, 5, 10, 20, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 0, 255, 51
    x = preprocess_i3d(frames, size=224)
    assert x.shape == (2, 3, 5, 224, 224)
    assert torch.allclose(x[:, 0], torch.tensor(-1.0)) and torch.allclose(x[:, 1], torch.tensor(1.0))
    assert torch.allclose(x[:, 2], torch.tensor(51 / 127.5 - 1))


def test_tf_same_padding_by_hand():
    # k=7 s=2 on 16: 16 % 2 == 0 -> total 7 - 2 = 5 -> (2, 3); on 15: total 7 - 1 = 6 -> (3, 3). F.pad order: W, H, T.
    assert same_padding((16, 15, 1), (7, 7, 1), (2, 2, 1)) == [0, 0, 3, 3, 2, 3]
    assert same_padding((4,), (3,), (1,)) == [1, 1]


def _loop_log_mel(x, rate):
    """Independent reference: direct DFT per 400-sample periodic-Hann frame, mel triangles built point by point."""
    import math

    win, hop, nfft = 400, 160, 512
    frames = [(x[i:i + win]) for i in range(0, len(x) - win + 1, hop)]
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)]
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(125.0), mel(7500.0)
    edges = [lo + (hi - lo) * i / 65 for i in range(66)]
    out = []
    for frame in frames:
        w = np.array(frame) * np.array(hann)
        n = np.arange(nfft)
        padded = np.concatenate([w, np.zeros(nfft - win)])
        mags = [abs(np.sum(padded * np.exp(-2j * np.pi * k * n / nfft))) for k in range(nfft // 2 + 1)]
        row = []
        for b in range(64):
            total = 0.0
            for k in range(1, nfft // 2 + 1):  # DC excluded
                m = mel(k * rate / 2 / (nfft // 2))
                weight = max(0.0, min((m - edges[b]) / (edges[b + 1] - edges[b]),
                                      (edges[b + 2] - m) / (edges[b + 2] - edges[b + 1])))
                total += weight * mags[k]
            row.append(math.log(total + 0.01))
        out.append(row)
    return np.array(out)


def test_vggish_log_mel_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    rate = 16000
    x = rng.standard_normal(rate + 400) * 0.1  # 98 frames -> one 96-frame example
    examples = vggish_log_mel(x, rate)
    assert examples.shape == (1, 96, 64)
    ref = _loop_log_mel(x[:400 + 160 * 3], rate)  # first 4 frames are enough to check the maths
    assert np.allclose(examples[0, :4], ref, atol=1e-9)


def test_mel_matrix_rows_and_vggish_framing():
    w = mel_matrix(257, 16000)
    assert w.shape == (257, 64) and np.all(w[0] == 0) and w.max() <= 1.0
    assert vggish_log_mel(np.zeros(8000), 16000).shape == (0, 96, 64)  # 0.5 s: no complete example
    assert vggish_log_mel(np.zeros((2, 4 * 16000)), 16000).shape == (4, 96, 64)


def _loop_mfcc(x, rate=16000):
    """Independent reference for the first frame: python_speech_features' steps written out by hand."""
    import math

    x = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    frame = np.array(x[:400])
    spec = np.abs(np.fft.rfft(frame, 512)) ** 2 / 512
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    points = [inv(mel(rate / 2) * i / 27) for i in range(28)]
    bins = [math.floor(513 * p / rate) for p in points]
    feats = []
    for j in range(26):
        total = 0.0
        for k in range(bins[j], bins[j + 1]):
            total += spec[k] * (k - bins[j]) / (bins[j + 1] - bins[j])
        for k in range(bins[j + 1], bins[j + 2]):
            total += spec[k] * (bins[j + 2] - k) / (bins[j + 2] - bins[j + 1])
        feats.append(math.log(total))
    ceps = []
    for i in range(13):  # orthonormal DCT-II
        scale = math.sqrt(1 / 26) if i == 0 else math.sqrt(2 / 26)
        ceps.append(scale * sum(f * math.cos(math.pi * i * (2 * n + 1) / 52) for n, f in enumerate(feats)))
    ceps = [c * (1 + 11 * math.sin(math.pi * i / 22)) for i, c in enumerate(ceps)]
    ceps[0] = math.log(spec.sum())
    return np.array(ceps)


def test_mfcc_first_frame_matches_hand_written_steps_and_frame_count():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(16000) * 1000
    feats = mfcc(x)
    assert feats.shape == (1 + int(np.ceil((16000 - 400) / 160)), 13)  # 99 frames at 100 Hz
    assert np.allclose(feats[0], _loop_mfcc(list(x)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [400, 401])
def test_mfcc_short_signals_zero_pad_the_last_frame(n):
    assert mfcc(np.ones(n)).shape[0] == (1 if n == 400 else 2)
