"""Analytic parameter and FLOP counts (per token and per sample), used by benchmarks and MFU logging."""

from __future__ import annotations

from .config import AUDIO, TEXT, VIDEO, DiTConfig


def linear_params_per_token(cfg: DiTConfig, modality: int) -> int:
    """Weights one token of ``modality`` multiplies through (one expert per layer), adapter and head included."""
    total = 0
    for i in range(cfg.num_layers):
        act = cfg.activation(i)
        up = cfg.gelu7_intermediate if act == "gelu7" else 2 * cfg.swiglu7_intermediate
        inner = cfg.gelu7_intermediate if act == "gelu7" else cfg.swiglu7_intermediate
        total += cfg.hidden_size * cfg.qkv_width + cfg.num_heads_q * cfg.head_dim * cfg.hidden_size
        total += cfg.hidden_size * up + inner * cfg.hidden_size
    in_ch = {VIDEO: cfg.video_in_channels, AUDIO: cfg.audio_in_channels, TEXT: cfg.text_in_channels}[modality]
    head = {VIDEO: cfg.video_out_channels, AUDIO: cfg.audio_in_channels, TEXT: 0}[modality]
    return total + in_ch * cfg.hidden_size + head * cfg.hidden_size


def attention_flops(cfg: DiTConfig, sample_len: int, local_keys: int | None = None) -> int:
    """Forward matmul FLOPs of attention for one sample: QK^T and PV, 2*L*Lk*d each per query head."""
    per_layer = 4 * sample_len * sample_len * cfg.num_heads_q * cfg.head_dim
    if local_keys is None:
        return per_layer * cfg.num_layers
    local = 4 * sample_len * local_keys * cfg.num_heads_q * cfg.head_dim
    n_local = len(cfg.local_attn_layers)
    return per_layer * (cfg.num_layers - n_local) + local * n_local


def forward_flops(cfg: DiTConfig, counts: list[tuple[int, int, int]]) -> int:
    """Forward FLOPs of a pack of samples given as (video, audio, text) token counts."""
    total = 0
    for nv, na, nt in counts:
        total += 2 * (nv * linear_params_per_token(cfg, VIDEO) + na * linear_params_per_token(cfg, AUDIO)
                      + nt * linear_params_per_token(cfg, TEXT))
        total += attention_flops(cfg, nv + na + nt)
    return total


def training_flops(cfg: DiTConfig, counts: list[tuple[int, int, int]], recompute: bool = False) -> int:
    """Forward + backward (backward = 2x forward; +1 forward with activation recomputation)."""
    return forward_flops(cfg, counts) * (4 if recompute else 3)
