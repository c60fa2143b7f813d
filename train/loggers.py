"""Loggers (a local CSV always, wandb offline unless a key is configured) and the progress bar."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

log = logging.getLogger("horse.train")


def wandb_mode(configured: str | None) -> str:
    """offline unless a key is configured (WANDB_API_KEY or a netrc login), so a run never hangs on the network."""
    if configured and configured != "auto":
        return configured
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = [CSVLogger(save_dir=str(run_dir), name="metrics", version="")]
    w = cfg.logger.wandb
    if w.enabled:
        try:
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:  # pragma: no cover - wandb is in the train extra
            log.warning("wandb is not installed: logging to CSV only")
            return loggers
        mode = wandb_mode(w.get("mode"))
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project=w.project, name=cfg.name, save_dir=str(run_dir), mode=mode,
                                   id=cfg.name.replace("/", "-"), resume="allow", log_model=False))
    return loggers


class HorseProgressBar(TQDMProgressBar):
    """Lightning's bar (which shows ETA for max_steps) without the version number clutter."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def progress_bar() -> HorseProgressBar:
    return HorseProgressBar(refresh_rate=1)
