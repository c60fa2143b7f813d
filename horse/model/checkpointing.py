"""Activation checkpointing applied from outside the model (the trainer decides where).

The layer's bound ``forward`` is replaced on the instance, so module names and
state_dict keys stay exactly those of the official checkpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch.utils.checkpoint
from torch import nn


def apply_activation_checkpointing(model: nn.Module, layers: Iterable[int] | None = None) -> list[int]:
    """Recompute the chosen transformer layers (all by default) in backward; returns their indices."""
    block = model.block.layers
    chosen = list(range(len(block))) if layers is None else sorted(set(layers))
    for i in chosen:
        layer = block[i]
        if getattr(layer, "_horse_checkpointed", False):
            continue
        inner = layer.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            return torch.utils.checkpoint.checkpoint(_inner, *args, use_reentrant=False, **kwargs)
        layer.forward = forward
        layer._horse_checkpointed = True
    return chosen


def remove_activation_checkpointing(model: nn.Module) -> None:
    for layer in model.block.layers:
        if getattr(layer, "_horse_checkpointed", False):
            del layer.forward
            del layer._horse_checkpointed
