"""Lightning strategies by name: single device, DDP, FSDP2 and DeepSpeed ZeRO-2/3.

Precision has one owner (the model's policy): no strategy gets a bf16 or autocast
setting. DeepSpeed runs through a small subclass of Lightning's strategy that
lets DeepSpeed's own CPU accelerator through (Lightning refuses CPU for
DeepSpeed; DeepSpeed itself runs there with gloo).
"""

from __future__ import annotations

from omegaconf import DictConfig

from .app import container

STRATEGIES = ("auto", "single", "ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3")


def build_strategy(cfg: DictConfig):
    t = cfg.trainer
    name = t.strategy
    if name not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {STRATEGIES}, got {name!r}")
    cpu = t.accelerator == "cpu"
    if name in ("auto", "single"):
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy
        return DDPStrategy(process_group_backend="gloo" if cpu else "nccl", find_unused_parameters=False)
    if name == "fsdp2":
        from .fsdp2 import fsdp2_strategy
        return fsdp2_strategy(cfg)
    from .deepspeed_cpu import deepspeed_strategy
    stage = 2 if name == "deepspeed_zero2" else 3
    return deepspeed_strategy(stage, offload=bool(t.get("offload", False)), cpu=cpu,
                              extra=container(t.get("deepspeed")),
                              grad_clip=float(cfg.optim.get("grad_clip") or 0.0))
