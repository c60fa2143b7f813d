"""Stable Audio Open VAE (stable-audio-tools Oobleck names) <-> diffusers `AutoencoderOobleck`.

Published layout, inside `pretransform.model.` (names checked against stable_audio_open_1.0_vae_keys.json):
  encoder.layers.0                      first conv
  encoder.layers.k (1..n)               encoder block: layers.{0,1,2} residual units, layers.3 snake,
                                        layers.4 strided conv
  encoder.layers.n+1 / n+2              snake / last conv
  decoder.layers.0                      first conv
  decoder.layers.k (1..n)               decoder block: layers.0 snake, layers.1 transposed conv,
                                        layers.{2,3,4} residual units
  decoder.layers.n+1 / n+2              snake / last conv (no bias)
  residual unit: layers.0 snake, layers.1 dilated conv, layers.2 snake, layers.3 1x1 conv
Convolutions are torch weight-normed in both layouts (weight_g, weight_v, bias). Snake `alpha`/`beta`
are stored as [C] in the published file and as [1, C, 1] in diffusers.
"""

from __future__ import annotations

import re

import torch

PUBLISHED_PREFIX = "pretransform.model."  # the VAE's tensors inside Stable Audio Open's model.safetensors
_CONV = r"(weight_g|weight_v|bias)"
_SNAKE = r"(alpha|beta)"
_UNIT = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}  # residual-unit Sequential index -> diffusers
_UNIT_INV = {v: k for k, v in _UNIT.items()}


def _unit_leaf(leaf: str) -> str | None:
    """Residual unit 'layers.1.weight_g' -> 'conv1.weight_g'."""
    if m := re.fullmatch(rf"layers\.([02])\.{_SNAKE}", leaf):
        return f"{_UNIT[m[1]]}.{m[2]}"
    if m := re.fullmatch(rf"layers\.([13])\.{_CONV}", leaf):
        return f"{_UNIT[m[1]]}.{m[2]}"
    return None


def _block_leaf(part: str, leaf: str) -> str | None:
    """Leaf inside encoder/decoder block `layers.k` -> diffusers leaf inside `block.{k-1}`."""
    unit_offset, snake, conv = (0, "3", "4") if part == "encoder" else (2, "0", "1")
    conv_name = "conv1" if part == "encoder" else "conv_t1"
    if m := re.fullmatch(rf"layers\.{snake}\.{_SNAKE}", leaf):
        return f"snake1.{m[1]}"
    if m := re.fullmatch(rf"layers\.{conv}\.{_CONV}", leaf):
        return f"{conv_name}.{m[1]}"
    if m := re.fullmatch(r"layers\.(\d)\.(layers\..+)", leaf):
        unit = int(m[1]) - unit_offset
        inner = _unit_leaf(m[2])
        if 0 <= unit < 3 and inner is not None:
            return f"res_unit{unit + 1}.{inner}"
    return None


def original_to_diffusers(name: str) -> str | None:
    """Published key (with or without the `pretransform.model.` prefix) -> AutoencoderOobleck key, or None."""
    name = name.removeprefix(PUBLISHED_PREFIX)
    m = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", name)
    if m is None:
        return None
    part, index, leaf = m[1], int(m[2]), m[3]
    if index == 0:
        return f"{part}.conv1.{leaf}" if re.fullmatch(_CONV, leaf) else None
    if leaf.startswith("layers."):
        inner = _block_leaf(part, leaf)
        return None if inner is None else f"{part}.block.{index - 1}.{inner}"
    if re.fullmatch(_SNAKE, leaf):  # the snake after the last block
        return f"{part}.snake1.{leaf}"
    if re.fullmatch(_CONV, leaf):  # the last conv
        return f"{part}.conv2.{leaf}"
    return None


def diffusers_to_original(name: str, num_blocks: int) -> str:
    """AutoencoderOobleck key -> published key with the prefix. `num_blocks` = len(downsampling_ratios)."""
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", name)
    if m is None:
        raise ValueError(f"not an AutoencoderOobleck key: {name}")
    part, rest = m[1], m[2]
    unit_offset, snake, conv = (0, "3", "4") if part == "encoder" else (2, "0", "1")
    if m := re.fullmatch(r"conv1\.(.+)", rest):
        tail = f"layers.0.{m[1]}"
    elif m := re.fullmatch(r"snake1\.(.+)", rest):
        tail = f"layers.{num_blocks + 1}.{m[1]}"
    elif m := re.fullmatch(r"conv2\.(.+)", rest):
        tail = f"layers.{num_blocks + 2}.{m[1]}"
    elif m := re.fullmatch(r"block\.(\d+)\.res_unit(\d)\.(\w+)\.(.+)", rest):
        tail = f"layers.{int(m[1]) + 1}.layers.{int(m[2]) - 1 + unit_offset}.layers.{_UNIT_INV[m[3]]}.{m[4]}"
    elif m := re.fullmatch(r"block\.(\d+)\.snake1\.(.+)", rest):
        tail = f"layers.{int(m[1]) + 1}.layers.{snake}.{m[2]}"
    elif m := re.fullmatch(r"block\.(\d+)\.(conv1|conv_t1)\.(.+)", rest):
        tail = f"layers.{int(m[1]) + 1}.layers.{conv}.{m[3]}"
    else:
        raise ValueError(f"no published name known for AutoencoderOobleck key: {name}")
    return f"{PUBLISHED_PREFIX}{part}.{tail}"


def snake_to_diffusers(name: str, value: torch.Tensor) -> torch.Tensor:
    """Published snake parameters are [C]; diffusers' Snake1d keeps [1, C, 1]."""
    return value.reshape(1, -1, 1) if name.endswith((".alpha", ".beta")) else value


def snake_to_original(name: str, value: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1) if name.endswith((".alpha", ".beta")) else value
