"""Resource plan: memory per device, FLOPs per step and an estimated step time for an experiment.

Memory model (bytes per parameter, fp32 masters): weights 4, gradients 4, AdamW
moments 8, EMA 4. ZeRO-2 shards gradients and optimizer states over the
data-parallel group; ZeRO-3 and FSDP2 shard everything; DDP shards nothing.
CPU offload moves optimizer states (and with ZeRO-3, parameters) to host memory.
Activations per token per layer are estimated from the tensors a layer saves
for backward (see ``activation_bytes_per_token``); with activation checkpointing
only each layer's input is kept, plus one layer's working set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from horse.model.config import DiTConfig
from horse.model.flops import training_flops

GIB = 1024 ** 3
SHARDING = {  # which states are sharded over the data-parallel group
    "ddp": (), "auto": (), "single": (),
    "deepspeed_zero2": ("grads", "optimizer"),   # parameters and the EMA stay whole on every rank
    "deepspeed_zero3": ("params", "grads", "optimizer", "ema"),
    "fsdp2": ("params", "grads", "optimizer", "ema"),
}


def activation_bytes_per_token(cfg: DiTConfig, layer: int, matmul_bytes: int) -> int:
    """Saved-for-backward bytes of one token in one layer (fp32 residual, ``matmul_bytes`` for matmul inputs)."""
    d, hd = cfg.hidden_size, cfg.head_dim
    inner = cfg.gelu7_intermediate if cfg.activation(layer) == "gelu7" else cfg.swiglu7_intermediate
    up = inner if cfg.activation(layer) == "gelu7" else 2 * inner
    attn = (2 * d * 4                                   # residual input, normed input (fp32)
            + cfg.qkv_width * 4                         # qkv after the matmul (fp32)
            + (cfg.num_heads_q + 2 * cfg.num_heads_kv) * hd * matmul_bytes  # rotated q, k, v
            + cfg.num_heads_q * hd * (matmul_bytes + 4))  # attention output, gated output
    mlp = 2 * d * 4 + up * 4 + inner * matmul_bytes
    return attn + mlp


@dataclass
class ResourcePlan:
    parameters: int
    devices: int
    strategy: str
    tokens_per_sample: int
    samples_per_step: int
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    ema_gib: float
    activations_gib: float
    total_gib: float
    device_memory_gib: float
    fits: bool
    flops_per_step: float
    step_seconds: float
    assumed_mfu: float
    devices_needed: int

    def table(self) -> str:
        rows = [("parameters", f"{self.parameters:,}"), ("strategy", self.strategy),
                ("devices", str(self.devices)), ("tokens per sample", f"{self.tokens_per_sample:,}"),
                ("samples per step (global)", str(self.samples_per_step)),
                ("weights / device", f"{self.weights_gib:.2f} GiB"), ("gradients / device", f"{self.grads_gib:.2f} GiB"),
                ("optimizer / device", f"{self.optimizer_gib:.2f} GiB"), ("EMA / device", f"{self.ema_gib:.2f} GiB"),
                ("activations / device", f"{self.activations_gib:.2f} GiB"),
                ("total / device", f"{self.total_gib:.2f} GiB of {self.device_memory_gib:.0f} GiB"),
                ("FLOPs per step", f"{self.flops_per_step:.3e}"),
                ("est. step time", f"{self.step_seconds:.2f} s at {self.assumed_mfu:.0%} MFU"),
                ("devices needed (memory)", str(self.devices_needed))]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(cfg: DiTConfig, *, tokens: tuple[int, int, int], micro_batch: int, accumulate: int, devices: int,
              strategy: str, device_memory_gib: float, peak_flops: float, mfu: float, checkpointing: bool,
              precision: str, offload: bool = False, ema: bool = True) -> ResourcePlan:
    """``tokens`` = (video, audio, text) per sample."""
    if strategy not in SHARDING:
        raise ValueError(f"unknown strategy {strategy!r} for the plan; known: {sorted(SHARDING)}")
    params = _count_params(cfg)
    sharded = SHARDING[strategy]
    shard = lambda what: devices if what in sharded else 1  # noqa: E731
    weights = params * 4 / shard("params")
    grads = params * 4 / shard("grads")
    optimizer = 0.0 if offload else params * 8 / shard("optimizer")
    ema_b = (params * 4 / shard("ema")) if ema else 0.0
    if offload and "params" in sharded:
        weights = 0.0
    n_tok = sum(tokens) * micro_batch
    matmul_bytes = 2 if precision == "mixed" else 4
    per_layer = [activation_bytes_per_token(cfg, i, matmul_bytes) for i in range(cfg.num_layers)]
    if checkpointing:
        acts = n_tok * (cfg.hidden_size * 4 * cfg.num_layers + max(per_layer))
    else:
        acts = n_tok * sum(per_layer)
    total = weights + grads + optimizer + ema_b + acts
    flops = training_flops(cfg, [tokens] * micro_batch * accumulate * devices, recompute=checkpointing)
    step_s = flops / (devices * peak_flops * mfu)
    fixed = params * (4 + 4 + (0 if offload else 8) + (4 if ema else 0))
    per_dev_budget = device_memory_gib * GIB - acts
    needed = max(1, math.ceil(fixed / per_dev_budget)) if per_dev_budget > 0 else -1
    if not sharded and needed > 1:
        needed = -1  # unsharded states cannot be split: no device count fits
    return ResourcePlan(params, devices, strategy, sum(tokens), micro_batch * accumulate * devices,
                        weights / GIB, grads / GIB, optimizer / GIB, ema_b / GIB, acts / GIB, total / GIB,
                        device_memory_gib, total <= device_memory_gib * GIB, flops, step_s, mfu, needed)


def _count_params(cfg: DiTConfig) -> int:
    import torch

    from horse.model import DiTModel
    with torch.device("meta"):
        return sum(p.numel() for p in DiTModel(cfg).parameters())
