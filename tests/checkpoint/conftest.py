"""Fixtures: a tiny mixed-dtype module standing in for the DiT (bf16 linear, fp32 norms/heads, frozen param,
persistent float and int buffers, a non-persistent buffer) and random state_dicts for it."""

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.proj = nn.Linear(8, width, bias=False, dtype=torch.bfloat16)
        self.norm_weight = nn.Parameter(torch.zeros(width))
        self.head = nn.Linear(width, 4)
        self.frozen = nn.Parameter(torch.ones(4), requires_grad=False)
        self.register_buffer("bands", torch.arange(4, dtype=torch.float32))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)


def _make_tiny_net(width: int = 16, meta: bool = False) -> TinyNet:
    with torch.device("meta" if meta else "cpu"):
        return TinyNet(width)


def _make_state_dict(width: int = 16, seed: int = 0, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Random values for every TinyNet state_dict entry, in the module's dtypes (or all floats stored as `dtype`)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in TinyNet(width).state_dict().items():
        if t.is_floating_point():
            out[name] = torch.randn(t.shape, generator=g).to(dtype or t.dtype)
        else:
            out[name] = torch.randint(1, 1000, t.shape, generator=g, dtype=t.dtype)
    return out


@pytest.fixture
def make_tiny_net():
    return _make_tiny_net


@pytest.fixture
def make_state_dict():
    return _make_state_dict
