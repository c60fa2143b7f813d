"""Shared fixtures for the DiT tests: tiny configs, fully randomised models, random packed samples.

Everything is tiny (hidden 64, a few dozen tokens) so the whole model suite runs in seconds on 2 CPU cores.
"""

import pytest
import torch

from horse.model import DiTConfig, DiTModel
from horse.model.packing import pack

# Tiny widths: 3 latent channels x (1x2x2) patch for video, odd widths for audio and text so that a
# mix-up of the per-modality column slices shows up as a shape error or a wrong value.
TINY = dict(num_layers=3, hidden_size=64, head_dim=16, num_query_groups=2, mm_layers=(0, 2), gelu7_layers=(0,),
            video_in_channels=12, audio_in_channels=5, text_in_channels=7)
VIDEO_LATENT_CHANNELS = 3


def _tiny_config(**overrides) -> DiTConfig:
    return DiTConfig(**{**TINY, **overrides})


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int = 0, norm_range: float = 0.5) -> torch.nn.Module:
    """Every parameter random, norms included (U(-r, r) around the zero init), linears ~ N(0, 1/fan_in)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * norm_range)
        elif p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _random_model(cfg: DiTConfig | None = None, seed: int = 0, precision: str = "fp32") -> DiTModel:
    return _randomize(DiTModel(cfg or _tiny_config(), precision=precision), seed)


def _random_sample(g: torch.Generator, cfg: DiTConfig, frames: int = 2, h: int = 4, w: int = 4,
                   audio: int = 5, text: int = 3) -> dict:
    """One sample: a video latent [C, T, h, w] (C = video_in_channels / 4), audio [Na, Ca], text [Nt, Ct]."""
    s = {}
    if frames:
        s["video"] = torch.randn(cfg.video_in_channels // 4, frames, h, w, generator=g)
    if audio:
        s["audio"] = torch.randn(audio, cfg.audio_in_channels, generator=g)
    if text:
        s["text"] = torch.randn(text, cfg.text_in_channels, generator=g)
    return s


def _make_pack(cfg: DiTConfig, shapes: list[dict], seed: int = 0, coords_style: str = "v2"):
    """``shapes``: per sample the kwargs of ``_random_sample`` -> (PackedBatch, list of samples)."""
    g = torch.Generator().manual_seed(seed)
    samples = [_random_sample(g, cfg, **s) for s in shapes]
    return pack(samples, cfg.max_in_channels, coords_style), samples


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (Frobenius, in float64): fp32 rounding noise of a few ulps per element stays ~1e-7."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def one_torch_thread():
    # On a loaded 2-core machine, intra-op threads fighting over the cores make tiny matmuls 20-100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config():
    return _tiny_config


@pytest.fixture
def randomize():
    return _randomize


@pytest.fixture
def random_model():
    return _random_model


@pytest.fixture
def make_pack():
    return _make_pack


@pytest.fixture
def rel_err():
    return _rel_err
