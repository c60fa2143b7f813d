"""Exponential moving average of weights, sharded like the parameters.

The shadow of each parameter is a tensor of the same kind: an FSDP2 ``DTensor``
shadows a ``DTensor`` shard, a DeepSpeed ZeRO-3 parameter shadows its local
partition (``ds_tensor``), so EMA memory per rank follows the parameters'.
The decay warms up as ``min(beta, (1 + n) / (10 + n))`` so a short run's EMA is
not its initialisation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.ds_tensor if hasattr(p, "ds_tensor") else p


class EMA:
    def __init__(self, model: nn.Module, beta: float = 0.999, warmup: bool = True):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EMA beta must be in [0, 1), got {beta}")
        self.beta, self.warmup, self.updates = beta, warmup, 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: _local(params[n]).detach().clone().float() for n in self.names}

    def decay(self) -> float:
        n = self.updates
        return min(self.beta, (1 + n) / (10 + n)) if self.warmup else self.beta

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].lerp_(_local(params[n]).detach().float(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n in self.names:
            local = _local(params[n])
            local.copy_(self.shadow[n].to(local.dtype))

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Run a block (validation, export) with the EMA weights, then restore the raw ones."""
        params = dict(model.named_parameters())
        backup = {n: _local(params[n]).detach().clone() for n in self.names}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    _local(params[n]).copy_(backup[n])

    def state_dict(self) -> dict:
        return {"beta": self.beta, "warmup": self.warmup, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.names) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        self.beta, self.warmup, self.updates = state["beta"], state["warmup"], state["updates"]
        for n in self.names:
            self.shadow[n].copy_(state["shadow"][n])
