"""DeepSpeed ZeRO-2 / ZeRO-3 under Lightning, on GPUs and (for CI and the demo) on CPU with gloo.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, while DeepSpeed
itself runs on its own CPU accelerator. ``HorseDeepSpeedStrategy`` lets that through
and adds what the training module needs from the engine:

- gradient accumulation under manual optimisation: the module runs one backward per
  micro-batch and ONE ``opt.step()`` per window. DeepSpeed is configured with
  ``gradient_accumulation_steps=1`` and the module marks the accumulation boundary
  itself (``accumulation_context(last)`` -> ``engine.set_gradient_accumulation_boundary``),
  so ZeRO keeps accumulating partitioned gradients until the last micro-batch and
  ``engine.step()`` (called by ``opt.step()``) applies exactly one update per window.
- gradient clipping: DeepSpeed clips (``gradient_clipping`` = ``optim.grad_clip``) and the
  module does not (``clips_gradients``); the module logs ``engine.get_global_grad_norm()``.
- ZeRO-3: an EMA whose swap also refreshes the parameters ZeRO-3 keeps gathered
  between forwards (``ZeroEMA``).

Precision has one owner: the config never enables DeepSpeed's fp16/bf16.

Start-up: DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op
(``deepspeed_shm_comm``) on every fresh machine. Only its inference all-reduce uses it (ZeRO's
collectives go through gloo), so the CPU path marks it unavailable: no minute of g++ per machine,
and no start-up that waits forever on the build lock of a compile that was killed.

Optimizer: the module's torch AdamW, the same maths under every strategy (so losses
match DDP's to rounding). With ``offload`` the optimizer step runs on the host, where
DeepSpeed's vectorised ``DeepSpeedCPUAdam`` (same AdamW update, same param groups) is
several times faster than torch's; it is a C++ op compiled once into
``$TORCH_EXTENSIONS_DIR`` (default ``$HORSE_CACHE/torch_extensions``).
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import contextmanager

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from horse.training import EMA

log = logging.getLogger(__name__)

ZERO_STAGES = (2, 3)
# engine progress lines every N steps: effectively never (Lightning's bar and loggers report progress)
STEPS_PER_PRINT = 10 ** 9
# a JIT build lock older than this was left by a killed compile (a build takes a minute or two)
STALE_BUILD_LOCK_S = 15 * 60


def extensions_dir() -> str:
    """Where DeepSpeed's JIT-compiled ops (CPU Adam) are cached; set once per process tree."""
    from .datasets import cache_root

    default = str(cache_root() / "torch_extensions")
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", default)


def clear_stale_build_lock(op_name: str, max_age_s: float = STALE_BUILD_LOCK_S) -> None:
    """Remove the build lock a killed JIT compile of ``op_name`` left behind.

    torch's extension loader waits, silently and forever, for that lock file to go; a lock this old
    belongs to no live build."""
    import time
    from pathlib import Path

    lock = Path(extensions_dir()) / op_name / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > max_age_s:
        log.warning("removing %s: a build lock %.0f min old, left by a killed compile of %s",
                    lock, age / 60, op_name)
        lock.unlink(missing_ok=True)
    else:
        log.info("%s is being compiled by another process (lock %s); waiting for it", op_name, lock)


def skip_shm_comm_op() -> None:
    """Tell DeepSpeed's CPU backend its shared-memory all-reduce op is unavailable (see module docstring)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def deepspeed_config(stage: int, offload: bool = False, cpu: bool = False, extra: dict | None = None,
                     grad_clip: float = 0.0) -> dict:
    """The DeepSpeed config dict: ZeRO ``stage``, optional host offload, fp32 (no fp16/bf16), no engine accumulation."""
    if stage not in ZERO_STAGES:
        raise ValueError(f"DeepSpeed ZeRO stage must be one of {ZERO_STAGES}, got {stage}")
    zero: dict = {"stage": stage, "contiguous_gradients": True, "overlap_comm": not cpu}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not cpu}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": not cpu}
    config = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": 1,  # the loader yields whole windows; only used for DeepSpeed's logs
        "gradient_clipping": float(grad_clip or 0.0),
        "zero_allow_untested_optimizer": True,  # torch AdamW
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
    config = _merge(config, extra or {})
    for key in ("fp16", "bf16"):
        if config.get(key, {}).get("enabled"):
            raise ValueError(f"trainer.deepspeed.{key}.enabled: precision is owned by the model's policy "
                             "(model.precision=mixed for bf16 compute); remove DeepSpeed's {key} option")
    if "gradient_accumulation_steps" in config:
        raise ValueError("trainer.deepspeed.gradient_accumulation_steps: accumulation is data.accumulate "
                         "(the module accumulates a window of micro-batches itself); remove it")
    return config


class ZeroEMA(EMA):
    """EMA of ZeRO-3 partitions whose swap also re-gathers the parameters ZeRO-3 keeps whole between
    forwards (``ds_persist``: small ones under ``stage3_param_persistence_threshold``); without it a
    validation "with EMA weights" would still use their raw values."""

    @contextmanager
    def swapped_in(self, model):
        try:
            with super().swapped_in(model):
                _regather_persistent(model)
                yield model
        finally:
            _regather_persistent(model)


def _regather_persistent(model) -> None:
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    whole = [p for p in model.parameters()
             if hasattr(p, "ds_tensor") and p.ds_status == ZeroParamStatus.AVAILABLE]
    if whole:
        whole[0].partition(param_list=whole)  # frees the gathered copies (the partitions stay)
        persistent = [p for p in whole if getattr(p, "ds_persist", False)]
        if persistent:
            persistent[0].all_gather(param_list=persistent)


class HorseDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, also on DeepSpeed's CPU accelerator (see module docstring)."""

    clips_gradients = True  # the module must not clip: DeepSpeed's config does

    def __init__(self, *, cpu: bool, cpu_adam: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.cpu, self.cpu_adam = cpu, cpu_adam

    @property
    def ema_class(self):
        return ZeroEMA if self.zero_stage_3 else EMA

    def setup_environment(self) -> None:
        if not self.cpu:
            return super().setup_environment()
        from deepspeed.accelerator import get_accelerator

        name = get_accelerator().device_name()
        if name != "cpu":
            raise RuntimeError(f"trainer.accelerator=cpu but DeepSpeed chose its {name!r} accelerator; "
                               "set DS_ACCELERATOR=cpu (or use trainer.accelerator=gpu)")
        # skip DeepSpeedStrategy's CUDA-only check; DDPStrategy's set-up calls DeepSpeed's init_distributed
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        if not self.cpu:
            return super().setup_distributed()
        # as DeepSpeedStrategy, minus its check that device indices match local ranks (CPU devices have none)
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        skip_shm_comm_op()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        if not self.cpu:
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)
        # as DeepSpeedStrategy, with the process's local rank as DeepSpeed's device rank (CPU devices have no index)
        import argparse

        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer

    @contextmanager
    def accumulation_context(self, last: bool):
        """Around one micro-batch's forward + backward: reduce and let ``step()`` update only after the last one."""
        engine = self.deepspeed_engine
        # What engine.forward() does per micro-batch (the module's micro-batches run inside ONE engine
        # forward, Lightning's training_step): ZeRO-3 counts micro-steps there, and without it each
        # backward would overwrite (not add to) the previous micro-batch's gradient partitions.
        clear = getattr(engine.optimizer, "clear_backward_seen_flag", None)
        if clear is not None:
            clear()
        engine.set_gradient_accumulation_boundary(last)
        yield

    def grad_norm(self) -> float | None:
        norm = self.deepspeed_engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def _init_optimizers(self):
        optimizer, scheduler_cfg = super()._init_optimizers()
        if self.cpu_adam:
            optimizer, scheduler_cfg = _to_cpu_adam(optimizer, scheduler_cfg)
        return optimizer, scheduler_cfg


def _to_cpu_adam(optimizer, scheduler_cfg):
    """The same AdamW (groups, lr, betas, eps, decay) as DeepSpeed's CPU Adam, with its LambdaLR rebuilt on it."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    from deepspeed.ops.op_builder.cpu import CPUAdamBuilder

    if not isinstance(optimizer, torch.optim.AdamW):
        raise ValueError(f"offload with CPU Adam replaces a torch AdamW, got {type(optimizer).__name__}")
    clear_stale_build_lock(CPUAdamBuilder.NAME)
    d = optimizer.defaults
    groups = [{k: v for k, v in g.items() if k in ("params", "lr", "weight_decay", "betas", "eps", "initial_lr")}
              for g in optimizer.param_groups]
    new = DeepSpeedCPUAdam(groups, lr=d["lr"], betas=d["betas"], eps=d["eps"], weight_decay=d["weight_decay"],
                           adamw_mode=True)
    if scheduler_cfg is not None:
        old = scheduler_cfg.scheduler
        if not isinstance(old, torch.optim.lr_scheduler.LambdaLR) or old.last_epoch != 0:
            raise ValueError("CPU Adam offload expects the module's fresh LambdaLR schedule")
        scheduler_cfg.scheduler = torch.optim.lr_scheduler.LambdaLR(new, old.lr_lambdas)
    return new, scheduler_cfg


def deepspeed_strategy(stage: int, offload: bool = False, cpu: bool = False, extra: dict | None = None,
                       grad_clip: float = 0.0) -> HorseDeepSpeedStrategy:
    """A Lightning strategy for DeepSpeed ZeRO ``stage`` (2 or 3); ``cpu``: DeepSpeed's CPU accelerator + gloo."""
    if cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # inherited by Lightning's worker processes
    extensions_dir()
    config = deepspeed_config(stage, offload=offload, cpu=cpu, extra=extra, grad_clip=grad_clip)
    return HorseDeepSpeedStrategy(cpu=cpu, cpu_adam=offload, config=config,
                                  process_group_backend="gloo" if cpu else None)
