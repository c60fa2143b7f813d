"""FAD: Frechet distance between VGGish embeddings of real and generated audio.

Choice: VGGish (AudioSet), the embedding of the original FAD paper and of the ``frechet_audio_distance`` package's
default, in the module layout of the common PyTorch port (torchvggish: ``features.{0,3,6,8,11,13}`` convolutions,
``embeddings.{0,2,4}`` linears; its ``vggish-10086976.pth`` state dict), checked against ``key_lists/vggish.json``.
The embedding is the last linear layer's 128 outputs, without the final ReLU and without the PCA/quantisation
post-processing (as that package computes FAD); a file that also holds ``pproc.*`` PCA tensors is accepted.

Input features (``vggish_log_mel``), as VGGish was trained: mono 16 kHz (resampled here with
``scipy.signal.resample_poly``; the port uses resampy, so resampled inputs differ slightly), 25 ms periodic-Hann
frames every 10 ms, |FFT| with 512 points, 64 mel bands (HTK mel scale, 125-7500 Hz, triangles in mel, DC weight 0),
``log(mel + 0.01)``, cut into non-overlapping examples of 96 frames (0.96 s). Leftover frames are dropped.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from torch import nn

from horse.metrics.frechet import frechet_distance_from_features

VGGISH_SAMPLE_RATE = 16000
VGGISH_WINDOW_SECONDS = 0.025
VGGISH_HOP_SECONDS = 0.010
VGGISH_MEL_BANDS = 64
VGGISH_MEL_MIN_HZ = 125.0
VGGISH_MEL_MAX_HZ = 7500.0
VGGISH_LOG_OFFSET = 0.01
VGGISH_EXAMPLE_FRAMES = 96   # 0.96 s per embedding
VGGISH_EMBEDDING = 128
VGGISH_KEY_LIST = "vggish"
HTK_MEL_BREAK_HZ, HTK_MEL_HIGH_Q = 700.0, 1127.0
CONV_WIDTHS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # VGG-A style stack; "M" = 2x2 max-pool


class VGGish(nn.Module):
    """``forward(log_mel [N, 1, 96, 64])`` -> embeddings ``[N, 128]`` (pre-ReLU, no PCA)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for width in CONV_WIDTHS:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
                cin = width
        self.features = nn.Sequential(*layers)
        flat = 512 * (VGGISH_EXAMPLE_FRAMES // 16) * (VGGISH_MEL_BANDS // 16)
        self.embeddings = nn.Sequential(nn.Linear(flat, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                                        nn.Linear(4096, VGGISH_EMBEDDING))

    def forward(self, x):
        x = self.features(x)                        # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)        # channels last, as the TensorFlow original flattens
        return self.embeddings(x)


def hertz_to_mel(hz):
    return HTK_MEL_HIGH_Q * np.log1p(np.asarray(hz, np.float64) / HTK_MEL_BREAK_HZ)


def mel_matrix(num_bins: int, sample_rate: int, num_bands: int = VGGISH_MEL_BANDS,
               low_hz: float = VGGISH_MEL_MIN_HZ, high_hz: float = VGGISH_MEL_MAX_HZ) -> np.ndarray:
    """``[num_bins, num_bands]`` triangular weights, linear in mel, over FFT bins 0..Nyquist (DC weight zero)."""
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2, num_bins))
    edges = np.linspace(hertz_to_mel(low_hz), hertz_to_mel(high_hz), num_bands + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def frame_signal(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Frames ``[1 + (len - length) // hop, length, ...]`` along axis 0, no padding (empty if too short)."""
    count = 0 if len(x) < length else 1 + (len(x) - length) // hop
    if not count:
        return np.zeros((0, length, *x.shape[1:]))
    return np.stack([x[i * hop:i * hop + length] for i in range(count)])


def to_mono_16k(waveform, sample_rate: int, target_rate: int = VGGISH_SAMPLE_RATE) -> np.ndarray:
    """``[S]`` or ``[channels, S]`` -> mono float64 ``[S']`` at ``target_rate`` (polyphase resampling)."""
    from scipy.signal import resample_poly

    x = np.asarray(waveform, np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"expected a waveform [S] or [channels, S], got shape {x.shape}")
    if sample_rate != target_rate:
        ratio = Fraction(target_rate, int(sample_rate))
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return x


def vggish_log_mel(waveform, sample_rate: int) -> np.ndarray:
    """Waveform -> VGGish examples ``[N, 96, 64]`` (see the module docstring)."""
    x = to_mono_16k(waveform, sample_rate)
    win = round(VGGISH_WINDOW_SECONDS * VGGISH_SAMPLE_RATE)
    hop = round(VGGISH_HOP_SECONDS * VGGISH_SAMPLE_RATE)
    fft = 2 ** int(np.ceil(np.log2(win)))
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(frame_signal(x, win, hop) * hann, n=fft))
    log_mel = np.log(spectrum @ mel_matrix(fft // 2 + 1, VGGISH_SAMPLE_RATE) + VGGISH_LOG_OFFSET)
    return frame_signal(log_mel, VGGISH_EXAMPLE_FRAMES, VGGISH_EXAMPLE_FRAMES)


@torch.no_grad()
def vggish_embeddings(model: VGGish, waveforms, sample_rate: int, batch_size: int = 64) -> np.ndarray:
    """All 0.96 s examples of all clips -> ``[N, 128]`` embeddings."""
    examples = [vggish_log_mel(w, sample_rate) for w in waveforms]
    examples = np.concatenate([e for e in examples if len(e)]) if any(len(e) for e in examples) else None
    if examples is None:
        raise ValueError(f"every clip is shorter than one VGGish example ({VGGISH_EXAMPLE_FRAMES * 10} ms)")
    device = next(model.parameters()).device
    x = torch.from_numpy(examples).float()[:, None]
    out = [model(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


def fad(model: VGGish, real_waveforms, generated_waveforms, sample_rate: int,
        generated_rate: int | None = None) -> float:
    """FAD between two sets of waveforms (``[channels, S]`` or ``[S]``; rates may differ per set)."""
    real = vggish_embeddings(model, real_waveforms, sample_rate)
    gen = vggish_embeddings(model, generated_waveforms, generated_rate or sample_rate)
    return frechet_distance_from_features(real, gen)


def load_vggish(path, key_list=VGGISH_KEY_LIST, device="cpu") -> VGGish:
    """VGGish from a local state-dict file (torchvggish key names), checked against the committed key list."""
    from horse.metrics.loaders import load_module_weights

    return load_module_weights(VGGish(), path, key_list, "VGGish").to(device)


__all__ = ["VGGish", "fad", "load_vggish", "mel_matrix", "to_mono_16k", "vggish_embeddings", "vggish_log_mel"]
