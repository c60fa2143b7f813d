"""Audio-video sync: SyncNet confidence (LSE-C), distance (LSE-D) and offset, as lip-sync papers report them.

Choice: SyncNet in the layout of the original release (joonson/syncnet_python ``SyncNetModel.S``: ``netcnnaud``,
``netfcaud``, ``netcnnlip``, ``netfclip``; its ``syncnet_v2.model`` state dict), checked against
``key_lists/syncnet_v2.json``. Synchformer (DeSync) is stronger but far heavier; SyncNet is the common choice
for talking-head video and needs only a face crop.

Protocol (that release's ``evaluate``): video at 25 fps, audio at 16 kHz; 13 MFCCs at 100 Hz
(python_speech_features defaults, on int16-scaled samples) so 4 MFCC frames per video frame; the lip net sees 5
RGB-ordered-as-read frames of 224x224 (values 0..255, no normalisation; the release reads BGR with OpenCV, so
frames are flipped to BGR here), the audio net the matching 20 MFCC frames. For offsets -vshift..vshift the
Euclidean distances between the video and shifted audio embeddings are averaged over time: LSE-D is the minimum,
LSE-C = median - minimum, offset = vshift - argmin.

NOT included: face detection and tracking (the release runs S3FD first). Pass face crops; otherwise
``center_square_crop`` is used, a fair approximation only for single, centred talking heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct
from torch import nn

SYNC_FPS = 25
SYNC_SAMPLE_RATE = 16000
SYNC_FRAME_SIZE = 224
SYNC_WINDOW = 5             # video frames per embedding
MFCC_PER_FRAME = 4          # 100 Hz MFCC / 25 fps
DEFAULT_VSHIFT = 15         # offsets searched each side, in video frames
SYNC_KEY_LIST = "syncnet_v2"
# python_speech_features.mfcc defaults
MFCC_WIN, MFCC_HOP, MFCC_NFFT, MFCC_FILTERS, MFCC_CEPS, MFCC_LIFTER, MFCC_PREEMPH = 0.025, 0.01, 512, 26, 13, 22, 0.97
INT16_SCALE = 32768.0


def _conv_block(kind, cin, cout, kernel, stride=1, padding=0):
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if kind == 2 else (nn.Conv3d, nn.BatchNorm3d)
    return [conv(cin, cout, kernel, stride, padding), bn(cout), nn.ReLU()]


class SyncNet(nn.Module):
    """``forward_audio(mfcc [N, 1, 13, 20])`` and ``forward_video(frames [N, 3, 5, 224, 224])`` -> ``[N, 1024]``."""

    def __init__(self, embedding: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_block(2, 1, 64, 3, 1, 1), nn.MaxPool2d(1, 1),
            *_conv_block(2, 64, 192, 3, 1, 1), nn.MaxPool2d(3, (1, 2)),
            *_conv_block(2, 192, 384, 3, 1, 1), *_conv_block(2, 384, 256, 3, 1, 1),
            *_conv_block(2, 256, 256, 3, 1, 1), nn.MaxPool2d(3, 2),
            *_conv_block(2, 256, 512, (5, 4)))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            *_conv_block(3, 3, 96, (5, 7, 7), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_block(3, 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_block(3, 256, 256, (1, 3, 3), 1, (0, 1, 1)), *_conv_block(3, 256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv_block(3, 256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_block(3, 256, 512, (1, 6, 6)))

    def forward_audio(self, x):
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_video(self, x):
        return self.netfclip(self.netcnnlip(x).flatten(1))


def mfcc(waveform: np.ndarray, sample_rate: int = SYNC_SAMPLE_RATE) -> np.ndarray:
    """python_speech_features-style MFCC ``[frames, 13]`` (pre-emphasis, rectangular frames zero-padded at the end,
    power spectrum / NFFT, 26 mel filters on FFT bins, log, orthonormal DCT-II, sine lifter 22, c0 = log energy)."""
    x = np.asarray(waveform, np.float64)
    x = np.append(x[:1], x[1:] - MFCC_PREEMPH * x[:-1])
    win, hop = int(MFCC_WIN * sample_rate + 0.5), int(MFCC_HOP * sample_rate + 0.5)
    count = 1 if len(x) <= win else 1 + int(np.ceil((len(x) - win) / hop))
    x = np.pad(x, (0, (count - 1) * hop + win - len(x)))
    frames = np.stack([x[i * hop:i * hop + win] for i in range(count)])
    power = np.abs(np.fft.rfft(frames, MFCC_NFFT)) ** 2 / MFCC_NFFT
    tiny = np.finfo(float).eps
    energy = np.maximum(power.sum(1), tiny)
    top = 2595 * np.log10(1 + (sample_rate / 2) / 700)                        # mel = 2595 log10(1 + hz / 700)
    hz = 700 * (10 ** (np.linspace(0, top, MFCC_FILTERS + 2) / 2595) - 1)    # filter edges, 0 Hz .. Nyquist
    bins = np.floor((MFCC_NFFT + 1) * hz / sample_rate).astype(int)
    bank = np.zeros((MFCC_FILTERS, MFCC_NFFT // 2 + 1))
    for j in range(MFCC_FILTERS):
        lo, mid, hi = bins[j:j + 3]
        bank[j, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        bank[j, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    feats = np.log(np.maximum(power @ bank.T, tiny))
    ceps = dct(feats, type=2, axis=1, norm="ortho")[:, :MFCC_CEPS]
    ceps *= 1 + (MFCC_LIFTER / 2) * np.sin(np.pi * np.arange(MFCC_CEPS) / MFCC_LIFTER)
    ceps[:, 0] = np.log(energy)
    return ceps


def center_square_crop(frames: np.ndarray, size: int = SYNC_FRAME_SIZE) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> ``[T, size, size, 3]``: largest centred square, bilinear resize."""
    t, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + side, left:left + side])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@dataclass(frozen=True)
class SyncScores:
    confidence: float   # LSE-C (higher is better)
    distance: float     # LSE-D (lower is better)
    offset: int         # video frames; 0 when in sync


@torch.no_grad()
def sync_scores(model: SyncNet, face_frames, waveform, sample_rate: int = SYNC_SAMPLE_RATE, *,
                vshift: int = DEFAULT_VSHIFT, batch_size: int = 20) -> SyncScores:
    """``face_frames`` uint8 ``[T, 224, 224, 3]`` RGB at 25 fps; ``waveform`` ``[S]``/``[channels, S]`` in [-1, 1]."""
    from horse.metrics.fad import to_mono_16k

    frames = np.asarray(face_frames)
    if frames.ndim != 4 or frames.shape[1:] != (SYNC_FRAME_SIZE, SYNC_FRAME_SIZE, 3):
        raise ValueError(f"expected face crops [T, {SYNC_FRAME_SIZE}, {SYNC_FRAME_SIZE}, 3], got {frames.shape}; "
                         "use center_square_crop or a face detector first")
    audio = to_mono_16k(waveform, sample_rate, SYNC_SAMPLE_RATE)
    cc = torch.from_numpy(mfcc(np.clip(audio, -1, 1) * INT16_SCALE).T.copy()).float()[None, None]  # [1, 1, 13, M]
    video = torch.from_numpy(frames[..., ::-1].copy()).float().permute(3, 0, 1, 2)[None]  # BGR, [1, 3, T, H, W]
    usable = min(len(frames), len(audio) // (SYNC_SAMPLE_RATE // SYNC_FPS)) - SYNC_WINDOW
    if usable < 1:
        raise ValueError(f"clip too short for SyncNet: needs more than {SYNC_WINDOW} frames of video and audio")
    device = next(model.parameters()).device
    v_feat, a_feat = [], []
    for start in range(0, usable, batch_size):
        idx = range(start, min(usable, start + batch_size))
        v_feat.append(model.forward_video(torch.cat([video[:, :, i:i + SYNC_WINDOW] for i in idx]).to(device)).cpu())
        a_in = torch.cat([cc[..., i * MFCC_PER_FRAME:i * MFCC_PER_FRAME + SYNC_WINDOW * MFCC_PER_FRAME] for i in idx])
        a_feat.append(model.forward_audio(a_in.to(device)).cpu())
    v_feat, a_feat = torch.cat(v_feat), torch.cat(a_feat)
    padded = F.pad(a_feat, (0, 0, vshift, vshift))
    window = 2 * vshift + 1
    dists = torch.stack([F.pairwise_distance(v_feat[i:i + 1].expand(window, -1), padded[i:i + window])
                         for i in range(len(v_feat))])                            # [frames, offsets]
    mean = dists.mean(0)
    best, arg = torch.min(mean, 0)
    return SyncScores(float(torch.median(mean) - best), float(best), int(vshift - arg))


def load_syncnet(path, key_list=SYNC_KEY_LIST, device="cpu") -> SyncNet:
    """SyncNet from a local state-dict file (syncnet_python key names), checked against the committed key list."""
    from horse.metrics.loaders import load_module_weights

    return load_module_weights(SyncNet(), path, key_list, "SyncNet", strip_prefixes=("module.", "__S__.")).to(device)


__all__ = ["SyncNet", "SyncScores", "center_square_crop", "load_syncnet", "mfcc", "sync_scores"]
