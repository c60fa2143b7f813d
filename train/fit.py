"""Build the Lightning run (model, data, strategy, callbacks, loggers) and fit, resuming when asked."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from horse.diffusion.loss import LossConfig
from horse.diffusion.objective import NoiseConfig
from horse.training import TaskConfig

from .app import build_model, container, dump_json, save_resolved_config
from .budget import TimeBudget
from .checkpointing import RunCheckpointer, clean_partial, latest_checkpoint
from .data import window_loader
from .datasets import build_data
from .loggers import build_loggers, progress_bar
from .module import DiTTrainingModule
from .strategies import build_strategy
from .validation import Validator

log = logging.getLogger("horse.train")


class WindowDataModule(L.LightningDataModule):
    def __init__(self, items: list[dict], data_cfg: DictConfig, seed: int):
        super().__init__()
        self.items, self.cfg, self.seed = items, data_cfg, seed

    def train_dataloader(self):
        module = self.trainer.lightning_module
        return window_loader(self.items, rank=self.trainer.global_rank, world_size=self.trainer.world_size,
                             seed=self.seed, micro_batch=self.cfg.micro_batch, accumulate=self.cfg.accumulate,
                             num_workers=self.cfg.num_workers, loader_state=module.loader_state)


def task_config(cfg: DictConfig) -> TaskConfig:
    o = cfg.objective
    return TaskConfig(noise=NoiseConfig(**OmegaConf.to_container(o.noise, resolve=True)),
                      loss=LossConfig(**OmegaConf.to_container(o.loss, resolve=True)),
                      coords_style=o.coords_style, caption_dropout=o.caption_dropout,
                      ti2v_probability=o.ti2v_probability, v2a_probability=o.v2a_probability)


def resolve_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    mode = cfg.resume
    if mode in (None, "never", False):
        return None
    if mode == "auto":
        latest = latest_checkpoint(run_dir)
        return str(latest / "state.ckpt") if latest is not None else None
    path = Path(mode)
    if path.is_dir() and (path / "state.ckpt").exists():
        return str(path / "state.ckpt")
    raise FileNotFoundError(f"resume={mode}: no checkpoint there (expected a step-N folder with state.ckpt)")


def fit(cfg: DictConfig, plan) -> dict:
    run_dir = Path(cfg.run_dir).absolute()
    if rank_zero_only.rank == 0:  # (the rank from the launcher's env: every rank runs this file)
        save_resolved_config(cfg, run_dir)  # two ranks racing on its temporary file would crash one
        clean_partial(run_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t0 = time.perf_counter()
    data = build_data(cfg.data)
    data_seconds = time.perf_counter() - t0
    log.info("data ready in %.1fs: %s", data_seconds, data.description)

    model = build_model(cfg)
    from .validation import null_text_features
    null_text = null_text_features(cfg) if cfg.objective.caption_dropout > 0 else None
    module = DiTTrainingModule(
        model, task_config(cfg), OmegaConf.to_container(cfg.optim, resolve=True), seed=int(cfg.seed),
        null_text=null_text, ema_beta=cfg.optim.ema_beta,
        tread=container(cfg.model.get("tread")) or None,
        max_nonfinite=cfg.trainer.max_nonfinite, peak_flops=cfg.plan.peak_flops,
        num_workers=cfg.data.num_workers, activation_checkpointing=bool(cfg.model.activation_checkpointing),
        compile_layers=bool(cfg.model.get("compile", False)), losses_path=run_dir / "losses.jsonl",
        prefix_stages=container(cfg.objective.get("prefix_stages")) or ())
    checkpointer = RunCheckpointer(run_dir, cfg.trainer.checkpoint_every_n_steps, cfg.trainer.keep_last)
    validator = Validator(cfg, data, run_dir, checkpointer)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes,
        strategy=build_strategy(cfg), precision="32-true", max_steps=cfg.trainer.max_steps,
        limit_val_batches=0, num_sanity_val_steps=0, logger=build_loggers(cfg, run_dir),
        callbacks=[validator, checkpointer, TimeBudget(cfg.trainer.get("max_minutes"), checkpointer),
                   progress_bar()], enable_checkpointing=False,
        default_root_dir=str(run_dir), log_every_n_steps=cfg.trainer.log_every_n_steps,
        use_distributed_sampler=False, enable_model_summary=False, deterministic=False)
    ckpt = resolve_resume(cfg, run_dir)
    if ckpt:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, datamodule=WindowDataModule(data.train, cfg.data, int(cfg.seed)), ckpt_path=ckpt)
    summary = {"run_dir": str(run_dir), "steps": trainer.global_step, "data_seconds": data_seconds,
               "train_seconds": time.perf_counter() - t0 - data_seconds, "validation": validator.history,
               "nonfinite_steps": module.nonfinite_steps, "data": data.description}
    if trainer.is_global_zero:
        dump_json(run_dir / "summary.json", summary)
    return summary
