"""FVD: Frechet distance between I3D (Kinetics-400) features of real and generated videos.

The network is Inception-v1 I3D in the module layout of the widely used PyTorch port (pytorch-i3d's
``InceptionI3d``, 400 classes; its converted Kinetics-400 weights are what common FVD code loads, e.g. the
``i3d_pretrained_400.pt`` state dict), written here because no installed library provides it. Key names
(``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias`` ...) follow that port,
checked against ``key_lists/i3d_400.json``. Convolutions and max-pools use TensorFlow "SAME" padding.

Features: the 400 logits (before softmax), averaged over the remaining time steps, as the original FVD does.
Input preprocessing (``preprocess_i3d``): uint8 frames resized to 224x224 (bilinear), scaled to [-1, 1].
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from horse.metrics.frechet import frechet_distance_from_features

I3D_INPUT_SIZE = 224
I3D_NUM_CLASSES = 400
I3D_BN_EPS = 1e-3
I3D_FINAL_POOL = (2, 7, 7)  # average-pool window before the logits (16 frames at 224 px -> one output step)
I3D_MIN_FRAMES = 9          # fewer frames leave less than the final pool's 2 time steps
I3D_KEY_LIST = "i3d_400"

# Inception blocks: name, input channels, branch widths (1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1).
INCEPTION_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
# Max-pools before a block: name -> (kernel, stride), placed before the block named in POOL_BEFORE.
POOLS = {"MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)), "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
         "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2))}
POOL_BEFORE = {"Mixed_3b": "MaxPool3d_3a_3x3", "Mixed_4b": "MaxPool3d_4a_3x3", "Mixed_5b": "MaxPool3d_5a_2x2"}


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TensorFlow "SAME" padding in F.pad order (last dim first).

    Per dim: total = max(k - s, 0) when n % s == 0, else max(k - n % s, 0); the front gets the floor half.
    """
    pads = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return pads


class SamePadMaxPool3d(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        # Zero padding (as the port does): inputs after ReLU are >= 0, so zeros never win a max over real values.
        x = F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """SAME-padded Conv3d (+ BatchNorm3d) (+ ReLU): submodules ``conv3d`` and ``bn``."""

    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn=True, relu=True, bias=False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=I3D_BN_EPS) if bn else None

    def forward(self, x):
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    def __init__(self, cin, widths):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a, self.b1b = Unit3D(cin, w1a), Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, w2a), Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a, self.b3b = SamePadMaxPool3d((3, 3, 3), (1, 1, 1)), Unit3D(cin, w3)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D; ``forward(x [B, 3, T, H, W] in [-1, 1])`` -> logits ``[B, T', num_classes]``."""

    def __init__(self, num_classes: int = I3D_NUM_CLASSES, in_channels: int = 3,
                 final_pool: tuple[int, int, int] = I3D_FINAL_POOL):
        super().__init__()
        self.final_pool = tuple(final_pool)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d(*POOLS["MaxPool3d_2a_3x3"])
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        for name, cin, widths in INCEPTION_BLOCKS:
            if name in POOL_BEFORE:
                setattr(self, POOL_BEFORE[name], SamePadMaxPool3d(*POOLS[POOL_BEFORE[name]]))
            setattr(self, name, InceptionBlock(cin, widths))
        last = INCEPTION_BLOCKS[-1][2]
        self.logits = Unit3D(last[0] + last[2] + last[4] + last[5], num_classes, bn=False, relu=False, bias=True)

    def forward(self, x):
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))))
        for name, _, _ in INCEPTION_BLOCKS:
            if name in POOL_BEFORE:
                x = getattr(self, POOL_BEFORE[name])(x)
            x = getattr(self, name)(x)
        t, h, w = x.shape[2:]
        if t < self.final_pool[0] or h < self.final_pool[1] or w < self.final_pool[2]:
            raise ValueError(f"input too small for I3D: features {t}x{h}x{w} < pool {self.final_pool}; give at least "
                             f"{I3D_MIN_FRAMES} frames at {I3D_INPUT_SIZE}x{I3D_INPUT_SIZE}")
        x = self.logits(F.avg_pool3d(x, self.final_pool, stride=1))  # dropout is identity at eval
        return x.flatten(3).mean(-1).transpose(1, 2)  # [B, classes, T', 1, 1] -> [B, T', classes]


def preprocess_i3d(frames, size: int = I3D_INPUT_SIZE) -> torch.Tensor:
    """uint8 frames ``[B, T, H, W, 3]`` (or one clip ``[T, H, W, 3]``) -> float ``[B, 3, T, size, size]`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [B, T, H, W, 3], got shape {tuple(x.shape)}")
    b, t, h, w, _ = x.shape
    x = x.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x / 127.5 - 1.0
    return x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos, *, size: int = I3D_INPUT_SIZE, batch_size: int = 4) -> np.ndarray:
    """``[N, T, H, W, 3]`` uint8 videos (or a list of clips) -> ``[N, num_classes]`` time-averaged logits."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(videos), batch_size):
        batch = preprocess_i3d(np.stack([np.asarray(v) for v in videos[start:start + batch_size]]), size)
        out.append(model(batch.to(device)).mean(dim=1).double().cpu().numpy())
    return np.concatenate(out)


def fvd(model: InceptionI3d, real_videos, generated_videos, *, size: int = I3D_INPUT_SIZE,
        batch_size: int = 4) -> float:
    """FVD between two sets of uint8 videos ``[T, H, W, 3]`` (each set needs >= 2 videos; hundreds in practice)."""
    return frechet_distance_from_features(i3d_features(model, real_videos, size=size, batch_size=batch_size),
                                          i3d_features(model, generated_videos, size=size, batch_size=batch_size))


def load_i3d(path, key_list=I3D_KEY_LIST, device="cpu") -> InceptionI3d:
    """I3D from a local state-dict file (pytorch-i3d key names), checked against the committed key list."""
    from horse.metrics.loaders import load_key_list, load_module_weights

    classes = load_key_list(key_list).tensors["logits.conv3d.bias"][0]
    return load_module_weights(InceptionI3d(num_classes=classes), path, key_list, "I3D").to(device)


__all__ = ["I3D_INPUT_SIZE", "InceptionI3d", "fvd", "i3d_features", "load_i3d", "preprocess_i3d", "same_padding"]
