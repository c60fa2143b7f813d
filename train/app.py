"""Compose the objects a Hydra config describes and run training (``python train.py``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("horse.train")


class PlanError(SystemExit):
    """The experiment cannot run on this machine; the message is the resource plan."""


def container(node) -> dict:
    """A config node (or None) as a plain dict."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def model_config(cfg: DictConfig):
    from horse.model import get_config

    m = cfg.model
    if isinstance(m.preset, str):
        return get_config(m.preset, **container(m.get("overrides")))
    return get_config(container(m.preset))


def build_model(cfg: DictConfig):
    from horse.model import DiTModel
    from horse.model.init import init_weights

    m = cfg.model
    model = DiTModel(model_config(cfg), precision=m.precision, attention_backend=m.get("attention_backend", "sdpa"))
    init_weights(model, torch.Generator().manual_seed(int(cfg.seed)))
    if cfg.get("init_from"):
        load_init(model, cfg.init_from)
    return model


def load_init(model, path: str) -> None:
    """Start from an official DiT folder or a horse checkpoint folder (strict key check)."""
    from horse.checkpoint import load_state_dict_folder

    folder = Path(path)
    if (folder / "config.json").is_file():
        from horse.checkpoint_folder import read_config
        config = read_config(folder)
        weights = config.resolve(folder, config.weights)
    else:
        weights = folder
    if not Path(weights).exists():
        raise FileNotFoundError(f"init_from: {weights} does not exist")
    load_state_dict_folder(model, weights, strict=True, dtype=torch.float32)
    log.info("initialised from %s", weights)


def resource_plan(cfg: DictConfig, model_cfg):
    from .plan import make_plan

    p, t = cfg.plan, cfg.trainer
    return make_plan(model_cfg, tokens=tuple(p.tokens_per_sample), micro_batch=cfg.data.micro_batch,
                     accumulate=cfg.data.accumulate, devices=int(t.devices) * int(t.num_nodes),
                     strategy=t.strategy, device_memory_gib=p.device_memory_gib, peak_flops=p.peak_flops,
                     mfu=p.assumed_mfu, checkpointing=cfg.model.activation_checkpointing,
                     precision=cfg.model.precision, offload=t.get("offload", False), ema=cfg.optim.ema_beta is not None)


def check_machine(cfg: DictConfig, plan) -> None:
    accel = cfg.trainer.accelerator
    if accel == "gpu" and not torch.cuda.is_available():
        raise PlanError(f"experiment needs GPUs (trainer.accelerator=gpu) but none is available here.\n{plan.table()}")
    if not plan.fits:
        raise PlanError(f"the experiment does not fit in {plan.device_memory_gib:.0f} GiB per device "
                        f"({plan.total_gib:.1f} GiB needed).\n{plan.table()}")


def check_required(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError("required settings are missing: " + ", ".join(missing)
                         + "\nset them on the command line, e.g. " + " ".join(f"{k}=..." for k in missing))


def run(cfg: DictConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if cfg.trainer.get("threads"):
        torch.set_num_threads(int(cfg.trainer.threads))
    plan = resource_plan(cfg, model_config(cfg))
    if cfg.plan_only:
        print(plan.table())
        return {"plan": plan.to_dict()}
    check_machine(cfg, plan)
    check_required(cfg)
    from .fit import fit
    return fit(cfg, plan)


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, run_dir / "config.yaml")


def dump_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
