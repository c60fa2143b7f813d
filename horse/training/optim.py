"""AdamW with the right parameters kept out of weight decay, and a warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from horse.model.init import no_weight_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if no_weight_decay(name, p, model.config) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
                    eps: float = 1e-8, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW without decay on norms, biases and parameters that never receive a gradient."""
    kwargs = {"fused": fused} if fused is not None else {}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def lr_lambda(warmup_steps: int, total_steps: int, min_ratio: float = 0.1, cosine_ends=()):
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total_steps``.

    ``cosine_ends``: earlier steps where a cosine ends. Up to the first (inclusive), the rate decays as if the
    run ended there; after each end, it follows the cosine that ends at the next one (``total_steps`` last),
    which jumps back up to where that longer cosine stands and decays again. This is exactly the schedule of a
    finished run resumed with a larger ``total_steps`` (whose first resumed step still uses the rate the finished
    run's scheduler last set). Ends at or beyond ``total_steps`` do not apply (the run stops first).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    ends = sorted(int(end) for end in cosine_ends if int(end) < total_steps)
    if ends and ends[0] <= warmup_steps:
        raise ValueError(f"every cosine end must come after the warmup ({warmup_steps} steps), got {ends[0]}: "
                         "move the end later (trainer.cosine_ends in the training app) or shorten the warmup")
    ends.append(total_steps)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        end = next((e for e in ends if step <= e), total_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, end - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
