"""FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's ``ModelParallelStrategy``.

The strategy only builds the device mesh (data-parallel over every process, no tensor
parallelism); the LightningModule's ``configure_model`` calls ``shard_model`` on it:
one FSDP unit per transformer layer, then the root (embedders, adapter, head).
Parameters stay fp32 DTensors (no FSDP mixed-precision policy: the model's precision
policy owns casting). Checkpoints are torch.distributed.checkpoint folders, one
shard per rank.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn


def fsdp2_strategy(cfg: DictConfig):
    from lightning.pytorch.strategies import ModelParallelStrategy

    t = cfg.trainer
    world = int(t.devices) * int(t.num_nodes)
    if world < 1:
        raise ValueError(f"fsdp2 needs trainer.devices * trainer.num_nodes >= 1, got {world}")
    return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1, save_distributed_checkpoint=True,
                                 process_group_backend="gloo" if t.accelerator == "cpu" else None)


def shard_model(model: nn.Module, mesh, reshard_after_forward: bool = True) -> nn.Module:
    """``fully_shard`` each transformer layer, then the root; in place (names and keys unchanged)."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.block.layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def is_fsdp2(strategy) -> bool:
    from lightning.pytorch.strategies import ModelParallelStrategy

    return isinstance(strategy, ModelParallelStrategy)
