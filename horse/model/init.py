"""Initialisation for training from scratch, and the parameters that can never receive a gradient.

The official init is unknown (spec 9.9). horse uses a depth-scaled scheme in
the Megatron/GPT-2 manner: every linear ~ N(0, 1/fan_in), and the projections
that write into the residual stream (``linear_proj``, ``down_proj`` and the two
output heads) are further scaled by 1/sqrt(2 * num_layers), so the residual
stream's variance stays O(1) with depth. Biases start at 0 and every
(w+1) norm weight at 0 (scale 1), as in the release.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import DiTConfig
from .layers import ExpertLinear, MultiModalityRMSNorm
from .rope import ElementWiseFourierEmbed

RESIDUAL_WRITERS = ("linear_proj", "down_proj", "final_linear_video", "final_linear_audio")
ZERO_INIT = ("video_position", "caption_modulation")  # options outside the release start as a no-op


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    depth_scale = 1.0 / math.sqrt(2 * model.config.num_layers)
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ZERO_INIT:
            module.weight.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, (ExpertLinear, nn.Linear)):
            std = module.weight.shape[1] ** -0.5 * (depth_scale if leaf in RESIDUAL_WRITERS else 1.0)
            w = module.weight
            # drawn on the CPU (where the generator lives) so a seed gives the same weights on any device
            w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float32).mul_(std).to(w.device, w.dtype))
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, MultiModalityRMSNorm):
            module.weight.zero_()
        elif isinstance(module, ElementWiseFourierEmbed) and module.mode != "fixed":
            module.reset_frequencies(generator)
    return model


def zero_gradient_rows(cfg: DiTConfig) -> dict[str, list[tuple[int, int]]]:
    """Row ranges (dim 0) of parameters whose gradient is exactly zero for any input.

    The heads discard text outputs, so in the last layer, when it has modality
    experts, the text expert's query rows, gates, q-norm, output projection, MLP
    and post-norms never influence an output (its key and value rows still do,
    through video and audio queries). Keep these out of weight decay.
    """
    last = cfg.num_layers - 1
    if last not in cfg.mm_layers:
        return {}
    d, hid, text = cfg.head_dim, cfg.hidden_size, 2
    qkv_w = cfg.qkv_width
    q_rows = cfg.num_heads_q * d
    kv_end = q_rows + 2 * cfg.num_heads_kv * d
    base = text * qkv_w
    qkv_rows = [(base, base + q_rows)]
    if cfg.enable_attn_gating:
        qkv_rows.append((base + kv_end, base + qkv_w))
    up = cfg.gelu7_intermediate if cfg.activation(last) == "gelu7" else 2 * cfg.swiglu7_intermediate
    p = f"block.layers.{last}."
    rows = {
        p + "attention.linear_qkv.weight": qkv_rows,
        p + "attention.q_norm.weight": [(text * d, (text + 1) * d)],
        p + "attention.linear_proj.weight": [(text * hid, (text + 1) * hid)],
        p + "mlp.pre_norm.weight": [(text * hid, (text + 1) * hid)],
        p + "mlp.up_gate_proj.weight": [(text * up, (text + 1) * up)],
        p + "mlp.down_proj.weight": [(text * hid, (text + 1) * hid)],
    }
    if last in cfg.post_norm_layers:
        rows[p + "attn_post_norm.weight"] = [(text * hid, (text + 1) * hid)]
        rows[p + "mlp_post_norm.weight"] = [(text * hid, (text + 1) * hid)]
    return rows


def no_weight_decay(name: str, param: torch.Tensor, cfg: DiTConfig) -> bool:
    """Norm weights, biases, learned RoPE frequencies (decay would pull them to 0, erasing position) and
    parameters that are wholly gradient-free get no weight decay."""
    if name.endswith(("bias", "rope.frequencies")) or "norm" in name.rsplit(".", 2)[-2] or param.dim() < 2:
        return True
    rows = zero_gradient_rows(cfg).get(name)
    return bool(rows) and sum(e - s for s, e in rows) == param.shape[0]
