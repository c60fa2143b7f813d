"""Wan2.2 VAE (`Wan2.2_VAE.pth`, official `WanVAE_` names) <-> diffusers `AutoencoderKLWan` (is_residual=True).

Published layout (names checked against wan2.2_vae_keys.json):
  conv1 / conv2                                  posterior projection / decoder input projection
  {encoder,decoder}.conv1                        first convolution
  {encoder,decoder}.middle.{0,1,2}               residual block, attention, residual block
  {encoder,decoder}.head.{0,2}                   RMS norm, last convolution
  encoder.downsamples.i.downsamples.j            j < num_res_blocks: residual block, else the resampler
  decoder.upsamples.i.upsamples.j                j < num_res_blocks + 1: residual block, else the resampler
  residual block: residual.{0,2,3,6} (norm1, conv1, norm2, conv2) and shortcut (1x1 conv when dims change)
"""

from __future__ import annotations

import re

_TOP_LEVEL = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
# nn.Sequential indices of the published residual block -> diffusers WanResidualBlock attribute names
_RESIDUAL = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2", "residual.6": "conv2",
             "shortcut": "conv_shortcut"}
_RESIDUAL_INV = {v: k for k, v in _RESIDUAL.items()}
_MIDDLE_RESNETS = {"0": "0", "2": "1"}  # middle.0 / middle.2 are the two residual blocks around the attention
_MIDDLE_RESNETS_INV = {v: k for k, v in _MIDDLE_RESNETS.items()}
_TOP_LEVEL_INV = {v: k for k, v in _TOP_LEVEL.items()}


def _residual_leaf(leaf: str) -> str | None:
    """'residual.2.weight' -> 'conv1.weight'; None for anything else."""
    match = re.fullmatch(r"(residual\.\d+|shortcut)\.(weight|bias|gamma)", leaf)
    if match is None or match[1] not in _RESIDUAL:
        return None
    return f"{_RESIDUAL[match[1]]}.{match[2]}"


def original_to_diffusers(name: str) -> str | None:
    """Published Wan2.2 VAE key -> AutoencoderKLWan key (None when the name is not part of the layout)."""
    match = re.fullmatch(r"(conv[12])\.(weight|bias)", name)
    if match:
        return f"{_TOP_LEVEL[match[1]]}.{match[2]}"
    match = re.fullmatch(r"(encoder|decoder)\.(.+)", name)
    if match is None:
        return None
    part, rest = match[1], match[2]
    if m := re.fullmatch(r"conv1\.(weight|bias)", rest):
        return f"{part}.conv_in.{m[1]}"
    if m := re.fullmatch(r"head\.0\.gamma", rest):
        return f"{part}.norm_out.gamma"
    if m := re.fullmatch(r"head\.2\.(weight|bias)", rest):
        return f"{part}.conv_out.{m[1]}"
    if m := re.fullmatch(r"middle\.1\.(norm\.gamma|to_qkv\.(?:weight|bias)|proj\.(?:weight|bias))", rest):
        return f"{part}.mid_block.attentions.0.{m[1]}"
    if m := re.fullmatch(r"middle\.([02])\.(.+)", rest):
        leaf = _residual_leaf(m[2])
        return None if leaf is None else f"{part}.mid_block.resnets.{_MIDDLE_RESNETS[m[1]]}.{leaf}"
    stage, blocks, sampler = (
        ("downsamples", "down_blocks", "downsampler") if part == "encoder" else ("upsamples", "up_blocks", "upsampler")
    )
    if m := re.fullmatch(rf"{stage}\.(\d+)\.{stage}\.(\d+)\.(.+)", rest):
        block, index, leaf = m[1], m[2], m[3]
        if re.fullmatch(r"(resample\.1|time_conv)\.(weight|bias)", leaf):  # the 2-D conv / causal time conv
            return f"{part}.{blocks}.{block}.{sampler}.{leaf}"
        residual = _residual_leaf(leaf)
        return None if residual is None else f"{part}.{blocks}.{block}.resnets.{index}.{residual}"
    return None


def diffusers_to_original(name: str, num_res_blocks: int) -> str:
    """AutoencoderKLWan key -> published key. `num_res_blocks` places the resampler after the residual blocks."""
    if m := re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", name):
        return f"{_TOP_LEVEL_INV[m[1]]}.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", name)
    if m is None:
        raise ValueError(f"not an AutoencoderKLWan key: {name}")
    part, rest = m[1], m[2]

    def residual(leaf: str) -> str:
        attr, param = leaf.rsplit(".", 1)
        return f"{_RESIDUAL_INV[attr]}.{param}"

    if m := re.fullmatch(r"conv_in\.(weight|bias)", rest):
        return f"{part}.conv1.{m[1]}"
    if rest == "norm_out.gamma":
        return f"{part}.head.0.gamma"
    if m := re.fullmatch(r"conv_out\.(weight|bias)", rest):
        return f"{part}.head.2.{m[1]}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{part}.middle.1.{m[1]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{part}.middle.{_MIDDLE_RESNETS_INV[m[1]]}.{residual(m[2])}"
    stage, blocks, sampler, sampler_index = (
        ("downsamples", "down_blocks", "downsampler", num_res_blocks)
        if part == "encoder"
        else ("upsamples", "up_blocks", "upsampler", num_res_blocks + 1)
    )
    if m := re.fullmatch(rf"{blocks}\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.{stage}.{m[1]}.{stage}.{m[2]}.{residual(m[3])}"
    if m := re.fullmatch(rf"{blocks}\.(\d+)\.{sampler}\.(.+)", rest):
        return f"{part}.{stage}.{m[1]}.{stage}.{sampler_index}.{m[2]}"
    raise ValueError(f"no published name known for AutoencoderKLWan key: {name}")
