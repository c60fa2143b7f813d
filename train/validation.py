"""Validation every N steps: per-modality flow losses of raw and EMA weights on the validation set
(fixed noise, so the numbers are comparable across steps), and a few fixed prompts generated to MP4.

Text features come from the latent cache and from one text encoder held by the
pipeline (no reload per validation). Every rank runs the same computation (sharded
strategies need every rank in each forward); rank 0 writes the files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from horse.checkpoint_folder import CheckpointConfig

log = logging.getLogger("horse.train")
VAL_SEED = 12345


def export_config(cfg: DictConfig) -> CheckpointConfig:
    """The checkpoint config a run exports (and validates with): model, precision, codecs, sampler defaults."""
    from .app import container

    fields = container(cfg.codec.checkpoint)
    # a run that trained video-to-audio samples its audio again from the finished video unless told otherwise
    fields.setdefault("sampler", {}).setdefault("audio_after_video", cfg.objective.get("v2a_probability", 0.0) > 0)
    m = cfg.model
    model = {"preset": m.preset, **container(m.get("overrides"))} if isinstance(m.preset, str) else container(m.preset)
    fields.update(format_version=1, model=model, precision=m.precision, coords_style=cfg.objective.coords_style,
                  null_text=cfg.objective.null_text,
                  video_frame_correlation=cfg.objective.noise.get("video_frame_correlation", 0.0))
    return CheckpointConfig.from_dict(fields, source="codec.checkpoint")


def null_text_features(cfg: DictConfig) -> torch.Tensor:
    from horse.pipeline.codecs import load_codecs
    codecs = load_codecs(export_config(cfg), Path("."), "cpu")
    return codecs.encode_text(cfg.objective.null_text).float()


@torch.no_grad()
def validation_losses(task, items: list[dict], micro_batch: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(VAL_SEED)
    sums, counts = {}, {}
    was_training = task.model.training
    task.model.eval()
    try:
        for i in range(0, len(items), micro_batch):
            step = task.compute(items[i:i + micro_batch], g)
            for k, t in step.terms.items():
                sums[k] = sums.get(k, 0.0) + t.sum.item()
                counts[k] = counts.get(k, 0.0) + t.count.item()
    finally:
        task.model.train(was_training)
    out = {f"loss_{k}": sums[k] / max(counts[k], 1.0) for k in sums}
    out["loss"] = sum(out.values())
    return out


class Validator(L.Callback):
    def __init__(self, cfg: DictConfig, data, run_dir: Path, checkpointer=None):
        v = cfg.validation
        self.every = int(v.every_n_steps)
        self.num_prompts = int(v.num_prompts)
        self.sampler = OmegaConf.to_container(v.sampler, resolve=True)
        self.val_items = data.val[:int(v.max_samples)] if v.max_samples else data.val
        self.prompts = list(v.prompts) if v.get("prompts") else data.val_captions[:self.num_prompts]
        self.micro_batch = int(cfg.data.micro_batch)
        self.cfg, self.run_dir, self.checkpointer = cfg, run_dir, checkpointer
        self.history: list[dict] = []
        self._pipeline = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every <= 0 or step % self.every and step != trainer.max_steps:
            return
        if self.history and self.history[-1]["step"] == step:
            return
        start = time.perf_counter()
        task = pl_module.task
        result = {"step": step, "raw": validation_losses(task, self.val_items, self.micro_batch)}
        if pl_module.ema is not None:
            with pl_module.ema.swapped_in(pl_module.model):
                result["ema"] = validation_losses(task, self.val_items, self.micro_batch)
        result["best"] = "ema" if "ema" in result and result["ema"]["loss"] <= result["raw"]["loss"] else "raw"
        if self.num_prompts:
            result["samples"] = self._samples(pl_module, step, trainer.is_global_zero, result["best"])
        result["seconds"] = time.perf_counter() - start
        self.history.append(result)
        metrics = {f"val/{kind}_{k}": v for kind in ("raw", "ema") if kind in result for k, v in result[kind].items()}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)
        if self.checkpointer is not None:
            self.checkpointer.last_validation = {k: v for k, v in result.items() if k != "samples"}
        log.info("step %d validation: raw %.4f%s (%.1fs)", step, result["raw"]["loss"],
                 f", ema {result['ema']['loss']:.4f}" if "ema" in result else "", result["seconds"])

    def _samples(self, pl_module, step: int, write: bool, weights: str) -> list[str]:
        from horse.pipeline import Pipeline

        if self._pipeline is None:
            self._pipeline = Pipeline.from_parts(export_config(self.cfg), pl_module.model, root=".",
                                                 device=pl_module.device)
        folder = self.run_dir / "samples" / f"step-{step}"
        paths = []
        was_training = pl_module.model.training
        pl_module.model.eval()
        swap = pl_module.ema.swapped_in(pl_module.model) if weights == "ema" else _null()
        try:
            with swap:
                for i, prompt in enumerate(self.prompts):
                    out = folder / f"{i:02d}.mp4" if write else None
                    self._pipeline.generate(prompt, out, seed=i, **self.sampler)
                    if out is not None:
                        paths.append(str(out))
        finally:
            pl_module.model.train(was_training)
        if write:
            (folder / "prompts.txt").write_text("\n".join(f"{i:02d}.mp4\t{p}" for i, p in enumerate(self.prompts)))
        return paths


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
