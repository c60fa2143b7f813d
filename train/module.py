"""The LightningModule: one training step = one optimizer step over a window of micro-batches.

Precision has one owner: parameters are fp32 masters and the model's precision
policy casts compute; Lightning runs at "32-true" with no autocast of its own.
Manual optimisation keeps the loss a token-weighted mean per modality over the
whole window and every rank: token counts are summed over micro-batches and
all-reduced before any backward, and DDP's gradient averaging is undone by
``gradient_scale = world_size``.

Strategies plug in through optional attributes of the Lightning strategy: a DeepSpeed
strategy marks the accumulation boundary (``accumulation_context``), clips gradients
itself (``clips_gradients``, ``grad_norm()``) and picks the EMA class (``ema_class``).
EMA is created once the strategy has sharded the parameters (``on_fit_start``), so its
shadows are shards too; sharded EMA and every rank's loader position are checkpointed
per rank (``rank_state``), since the strategies' checkpoints keep this module's extra
state from rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch

from horse.data.stream import LoaderState
from horse.diffusion.loss import LossConfig, combine_loss_terms
from horse.model.dit import TokenRouting
from horse.model.flops import training_flops
from horse.training import EMA, FlowMatchingTask, TaskConfig, build_optimizer, count_tokens, lr_lambda
from horse.training.curriculum import crop_prefix, parse_stages, prefix_frames_at
from horse.training.task import sample_token_counts

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """More non-finite-loss steps than ``trainer.max_nonfinite``: the run stops."""


class DiTTrainingModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, task_config: TaskConfig, optim_cfg: dict, *, seed: int,
                 null_text: torch.Tensor | None, ema_beta: float | None = 0.999, tread: dict | None = None,
                 max_nonfinite: int = 5, peak_flops: float | None = None, num_workers: int = 0,
                 activation_checkpointing: bool = False, compile_layers: bool = False,
                 losses_path: str | Path | None = None, prefix_stages=()):
        super().__init__()
        self.model = model
        self.task = FlowMatchingTask(model, task_config, null_text)
        self.optim_cfg = dict(optim_cfg)
        self.seed = seed
        self.ema_beta = ema_beta
        self.ema: EMA | None = None
        self.tread = tread or {}
        self.prefix_stages = parse_stages(prefix_stages)
        self.max_nonfinite = max_nonfinite
        self.nonfinite_steps = 0
        self.peak_flops = peak_flops
        self.loader_state = LoaderState(num_workers)
        self.automatic_optimization = False
        self.activation_checkpointing, self.compile_layers = activation_checkpointing, compile_layers
        self.losses_path = Path(losses_path) if losses_path is not None else None
        self._last_step_time: float | None = None
        self._model_configured = False
        self._pending_ema: dict | None = None

    # ---- set-up ---------------------------------------------------------
    def configure_model(self) -> None:
        """Activation checkpointing and per-layer compile (every strategy), then FSDP2 sharding (fsdp2 only)."""
        if self._model_configured:
            return
        self._model_configured = True
        if self.activation_checkpointing:
            from horse.model.checkpointing import apply_activation_checkpointing
            apply_activation_checkpointing(self.model)
        if self.compile_layers:
            for layer in self.model.block.layers:
                layer.compile()
        from .fsdp2 import is_fsdp2, shard_model
        if self._trainer is not None and is_fsdp2(self.trainer.strategy):
            shard_model(self.model, self.device_mesh["data_parallel"])

    def on_fit_start(self) -> None:
        # after the strategy wrapped/sharded the parameters: the shadows match their (local) shards
        if self.ema_beta is not None and self.ema is None:
            ema_class = getattr(self.trainer.strategy, "ema_class", EMA)
            self.ema = ema_class(self.model, beta=self.ema_beta)

    def configure_optimizers(self):
        c = self.optim_cfg
        opt = build_optimizer(self.model, lr=c["lr"], weight_decay=c.get("weight_decay", 0.0),
                              betas=tuple(c.get("betas", (0.9, 0.999))), eps=c.get("eps", 1e-8))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(c.get("warmup_steps", 0), c["total_steps"], c.get("min_lr_ratio", 0.1),
                           c.get("cosine_ends") or ()))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- randomness -----------------------------------------------------
    def _generator(self, micro: int) -> torch.Generator:
        # A pure function of (seed, rank, step, micro-batch): resumes reproduce it without saved RNG state.
        g = torch.Generator()
        g.manual_seed(hash((self.seed, self.global_rank, self.global_step, micro)) & 0x7FFF_FFFF_FFFF_FFFF)
        return g

    def _routing(self, samples, generator):
        if not self.tread:
            return None
        n = sum(sum(sample_token_counts(s, self.model.config.video_patch)) for s in samples)
        keep = torch.rand(n, generator=generator) >= self.tread["selection_rate"]
        return TokenRouting(self.tread["start_layer"], self.tread["end_layer"], keep)

    # ---- the step -------------------------------------------------------
    def training_step(self, element, batch_idx):
        self.loader_state.update(element)
        window: list[list[dict]] = element["data"]
        frames = prefix_frames_at(self.prefix_stages, self.global_step)
        if frames is not None:
            window = [[crop_prefix(s, frames) for s in micro] for micro in window]
        opt = self.optimizers()
        sched = self.lr_schedulers()
        world = self.trainer.world_size
        generators = [self._generator(i) for i in range(len(window))]
        modes = [self.task.draw_modes(len(micro), g) for micro, g in zip(window, generators)]
        counts = {"video": 0.0, "audio": 0.0}
        for micro, micro_modes in zip(window, modes):
            for k, v in count_tokens(micro, micro_modes).items():
                counts[k] += v
        totals = torch.tensor([counts["video"], counts["audio"]], dtype=torch.float64)
        if world > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        total_counts = {"video": totals[0].item(), "audio": totals[1].item()}
        loss_cfg: LossConfig = self.task.config.loss
        loss_value, metrics_sum, tokens = 0.0, {}, 0
        for i, micro in enumerate(window):
            g = generators[i]
            micro = [{k: v.to(self.device) for k, v in s.items()} for s in micro]
            with self._accumulation_context(last=i == len(window) - 1):
                step = self.task.compute(micro, g, routing=self._routing(micro, g), modes=modes[i])
                loss = combine_loss_terms(step.terms, loss_cfg, total_counts=total_counts, gradient_scale=world)
                self.manual_backward(loss)
            loss_value += loss.detach().item() / world
            tokens += step.num_tokens
            for k, v in step.terms.items():
                metrics_sum[k] = metrics_sum.get(k, 0.0) + v.sum.detach().item()
        loss_t = torch.tensor(loss_value, device=self.device)
        if world > 1:
            loss_t = self.trainer.strategy.reduce(loss_t, reduce_op="sum")
        if not math.isfinite(loss_t.item()):
            self.nonfinite_steps += 1
            opt.zero_grad(set_to_none=True)
            self.log("train/nonfinite_steps", float(self.nonfinite_steps), prog_bar=False)
            if self.nonfinite_steps >= self.max_nonfinite:
                raise NonFiniteLossError(
                    f"{self.nonfinite_steps} steps had a non-finite loss (last at step {self.global_step}); "
                    "lower the learning rate, check the data for NaNs, or raise trainer.max_nonfinite")
            return None
        strategy = self.trainer.strategy
        clip = self.optim_cfg.get("grad_clip", 0.0)
        grad_norm = None
        if clip and not getattr(strategy, "clips_gradients", False):  # exactly one place clips
            grad_norm = _as_float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        opt.step()
        if getattr(strategy, "clips_gradients", False):
            grad_norm = strategy.grad_norm()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self._record_loss(loss_t.item(), grad_norm)
        self._log_step(loss_t.item(), metrics_sum, total_counts, tokens, window, grad_norm)
        return loss_t

    def _accumulation_context(self, last: bool):
        """No gradient reduction before the window's last micro-batch (DDP no_sync, DeepSpeed's boundary)."""
        strategy = self.trainer.strategy
        if hasattr(strategy, "accumulation_context"):
            return strategy.accumulation_context(last)
        strategy_model = getattr(strategy, "model", None)
        if not last and hasattr(strategy_model, "no_sync"):
            return strategy_model.no_sync()
        return nullcontext()  # FSDP2 reduce-scatters every micro-batch (sharded gradients accumulate)

    def _record_loss(self, loss: float, grad_norm: float | None) -> None:
        """``losses.jsonl``: one line per optimizer step (rank 0), flushed, for exact-resume checks and plots."""
        if self.losses_path is None or not self.trainer.is_global_zero:
            return
        with open(self.losses_path, "a") as f:
            f.write(json.dumps({"step": self.global_step, "loss": loss, "grad_norm": grad_norm}) + "\n")
            f.flush()

    def _log_step(self, loss, sums, counts, tokens, window, grad_norm):
        now = time.perf_counter()
        metrics = {"train/loss": loss, "train/lr": self.lr_schedulers().get_last_lr()[0]}
        for k, s in sums.items():
            metrics[f"train/loss_{k}"] = s / max(counts[k] / self.trainer.world_size, 1.0)
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        if self._last_step_time is not None:
            dt = now - self._last_step_time
            metrics["train/tokens_per_s"] = tokens * self.trainer.world_size / dt
            if self.peak_flops:
                shapes = [sample_token_counts(s, self.model.config.video_patch) for micro in window for s in micro]
                metrics["train/mfu"] = training_flops(self.model.config, shapes) / dt / self.peak_flops
        self._last_step_time = now
        self.log_dict(metrics, prog_bar=False, on_step=True, on_epoch=False)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        if "train/tokens_per_s" in metrics:
            self.log("tok/s", metrics["train/tokens_per_s"], prog_bar=True, on_step=True, logger=False)

    # ---- checkpoint state beyond Lightning's own ---------------------------
    @property
    def ema_sharded(self) -> bool:
        """EMA shadows are per-rank shards (FSDP2 DTensors, ZeRO-3 ``ds_tensor`` partitions)."""
        return self.ema is not None and any(_is_shard(p) or hasattr(p, "ds_tensor") for p in self.model.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # rank 0's view; sharded EMA and per-rank loader positions go to rank_state()
        checkpoint["horse"] = {"loader": self.loader_state.state_dict(), "nonfinite_steps": self.nonfinite_steps,
                               "ema": ema_local_state(self.ema) if self.ema is not None and not self.ema_sharded
                               else None}

    def rank_state(self) -> dict:
        """This rank's own part of a checkpoint (written by every rank next to the strategy's state)."""
        return {"loader": self.loader_state.state_dict(),
                "ema": ema_local_state(self.ema) if self.ema_sharded else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from .checkpointing import load_rank_state

        state = checkpoint.get("horse", {})
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        path = self.trainer.ckpt_path if self._trainer is not None else None
        mine = load_rank_state(Path(path).parent, self.global_rank, self.trainer.world_size) if path else None
        loader = mine["loader"] if mine is not None else state.get("loader")
        self.loader_state = LoaderState(self.loader_state.num_workers, loader)
        self._pending_ema = (mine or {}).get("ema") or state.get("ema")

    def on_train_start(self) -> None:
        # after every restore path (before or after the strategy's set-up): the EMA exists now
        if self._pending_ema is not None and self.ema is not None:
            load_ema_local_state(self.ema, self._pending_ema)
        self._pending_ema = None


def _is_shard(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if _is_shard(t) else t


def _as_float(norm) -> float:
    return float(norm.full_tensor() if _is_shard(norm) else norm)


def ema_local_state(ema: EMA) -> dict:
    """EMA state with this rank's local tensors (DTensor shards as plain tensors: no mesh in the file)."""
    state = ema.state_dict()
    state["shadow"] = {n: _local(t).detach().clone() for n, t in state["shadow"].items()}
    return state


@torch.no_grad()
def load_ema_local_state(ema: EMA, state: dict) -> None:
    missing = set(ema.names) - set(state["shadow"])
    if missing:
        raise ValueError(f"the checkpoint's EMA lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
    for n in ema.names:
        local, saved = _local(ema.shadow[n]), state["shadow"][n]
        if local.shape != saved.shape:
            raise ValueError(f"EMA shard {n}: checkpoint has shape {tuple(saved.shape)}, this run {tuple(local.shape)}"
                             " (sharded EMA resumes only with the same strategy and world size)")
        local.copy_(saved)
    ema.beta, ema.warmup, ema.updates = state["beta"], state["warmup"], state["updates"]
