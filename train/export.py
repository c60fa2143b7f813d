"""``horse export RUN_DIR -o MODEL_DIR``: a training run's checkpoint -> a horse checkpoint folder.

Reads the newest complete ``RUN_DIR/checkpoints/step-N/`` (or ``--step N``), whose ``state.ckpt`` is
- a file: a Lightning checkpoint (single process, DDP): ``state_dict`` holds ``model.<official key>``, the
  EMA shadow is ``checkpoint["horse"]["ema"]["shadow"]``;
- a DeepSpeed folder (ZeRO-2/3, a ``latest`` tag file): consolidated to fp32 by DeepSpeed's ``zero_to_fp32``;
  the module's extra state (``horse``) is in the engine's ``mp_rank_00_model_states.pt``;
- a torch.distributed.checkpoint folder (FSDP2, a ``.metadata`` file): the model entries
  (``state_dict.model.<key>``) are read into this process; the extra state is Lightning's ``meta.pt``.
A sharded EMA (FSDP2 DTensor shards, ZeRO-3 partitions) lies in the per-rank ``rank-R-of-W.pt`` files of the
step folder and is consolidated here: each rank's shard is a contiguous piece of the flattened parameter
(FSDP2 shards dim 0, ZeRO-3 partitions the flat tensor, padding the last piece), so concatenating the
flattened shards in rank order and cutting at the parameter's size gives it back.

``--weights auto`` takes the EMA when the step's last validation scored it no worse than the raw weights
(or, without a validation, whenever an EMA exists); the model card says which and why. The exported
``config.json`` is the run's ``train.validation.export_config`` with a ``model_card`` recording the data,
steps, losses, weights and export time; ``eval`` later appends its scores there.
Checkpoint files are unpickled (``weights_only=False``): export only runs you trust (your own).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import sys
from pathlib import Path

import torch

log = logging.getLogger("horse.export")

WEIGHT_CHOICES = ("auto", "ema", "raw")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODEL_PREFIX = "model."              # the LightningModule holds the DiT as ``self.model``
DEEPSPEED_PREFIX = "_forward_module."  # Lightning's wrapper around the module in older DeepSpeed checkpoints
DCP_MODEL_PREFIX = "state_dict." + MODEL_PREFIX  # DCP flattens nested keys with dots
DCP_EXTRA_STATE = "meta.pt"          # Lightning's non-tensor state next to a DCP folder's shards
LOSSES_FILE = "losses.jsonl"         # the module's per-step train losses (rank 0)
TRAIN_LOSS_WINDOW = 20               # logged steps averaged into the card's "train loss (mean of last N)"
MAX_LISTED = 8                       # keys shown in a mismatch error


@dataclasses.dataclass
class StepState:
    """What one complete step folder holds, as full (consolidated) fp32 tensors under official key names."""

    step: int
    folder: Path
    marker: dict
    raw: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    extra: dict  # the module's ``horse`` state: nonfinite_steps, loader position...
    layout: str  # "lightning" | "deepspeed" | "dcp"


# ---- finding and reading a step ------------------------------------------------------------------------------
def find_step(run_dir: str | Path, step: int | None = None) -> Path:
    from .checkpointing import complete_checkpoints

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (no checkpoints/ inside); pass the run's "
                                "outputs/<name>/ folder")
    found = dict(complete_checkpoints(run_dir))
    if not found:
        raise FileNotFoundError(f"{run_dir}/checkpoints holds no complete step-N/ checkpoint yet")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint of step {step}; complete steps: "
                                f"{sorted(found)}")
    return found[step]


def _strip(state: dict, prefix: str, where: str) -> dict[str, torch.Tensor]:
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"{where} holds no weights under {prefix!r}; was it written by train.py?")
    return out


def _read_lightning(path: Path) -> tuple[dict, dict, dict | None]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    extra = ckpt.get("horse") or {}
    ema = (extra.get("ema") or {}).get("shadow")
    return _strip(ckpt["state_dict"], MODEL_PREFIX, str(path)), extra, ema


def _read_deepspeed(path: Path) -> tuple[dict, dict, dict | None]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file

    state = get_fp32_state_dict_from_zero_checkpoint(str(path))
    state = {k[len(DEEPSPEED_PREFIX):] if k.startswith(DEEPSPEED_PREFIX) else k: v for k, v in state.items()}
    tag = (path / "latest").read_text().strip()
    stage = 3 if any((path / tag).glob("zero_pp_rank_*_mp_rank_*_model_states.pt")) else 2
    client = torch.load(get_model_state_file(str(path / tag), stage), map_location="cpu", weights_only=False)
    extra = client.get("horse") or {}
    return _strip(state, MODEL_PREFIX, str(path)), extra, (extra.get("ema") or {}).get("shadow")


def _read_dcp(path: Path) -> tuple[dict, dict, dict | None]:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    stored = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    keys = {k for k in stored if k.startswith(DCP_MODEL_PREFIX)}  # the weights only, not the optimizer
    if not keys:
        raise ValueError(f"{path} holds no model entries ({DCP_MODEL_PREFIX}*); was it written by train.py?")
    model = _load_state_dict_from_keys(keys, checkpoint_id=str(path))["state_dict"]  # nested back: {"model.x": t}
    extra_file = path / DCP_EXTRA_STATE
    extra = torch.load(extra_file, map_location="cpu", weights_only=False).get("horse") or {} \
        if extra_file.is_file() else {}
    return _strip(model, MODEL_PREFIX, str(path)), extra, (extra.get("ema") or {}).get("shadow")


def _layout(state: Path) -> str:
    if state.is_file():
        return "lightning"
    if (state / "latest").is_file():
        return "deepspeed"
    if (state / ".metadata").is_file():
        return "dcp"
    raise ValueError(f"{state} is neither a Lightning checkpoint file, a DeepSpeed folder (no 'latest') nor a "
                     "torch.distributed.checkpoint folder (no '.metadata')")


def read_step(folder: str | Path, shapes: dict[str, torch.Size] | None = None) -> StepState:
    """Load a complete step folder; ``shapes`` (the model's parameter shapes) are needed to rebuild a sharded EMA."""
    from .checkpointing import MARKER, STATE, STEP_RE

    folder = Path(folder)
    match = STEP_RE.match(folder.name)
    if match is None or not (folder / MARKER).is_file():
        raise FileNotFoundError(f"{folder} is not a complete step-N checkpoint folder (no {MARKER} marker)")
    marker = json.loads((folder / MARKER).read_text())
    layout = _layout(folder / STATE)
    reader = {"lightning": _read_lightning, "deepspeed": _read_deepspeed, "dcp": _read_dcp}[layout]
    raw, extra, ema = reader(folder / STATE)
    raw = {k: v.float() if v.is_floating_point() else v for k, v in raw.items()}
    if shapes is not None:
        _check_keys(raw, shapes, str(folder))
    ema = _consolidate_ema(folder, ema, shapes or {k: v.shape for k, v in raw.items()}, marker)
    return StepState(int(match.group(1)), folder, marker, raw, ema, extra, layout)


def _rank_shadows(folder: Path, world: int) -> list[dict] | None:
    """EMA shadows of every rank's ``rank-R-of-W.pt``, in rank order; None when the step has no sharded EMA."""
    from .checkpointing import rank_state_path

    paths = [rank_state_path(folder, rank, world) for rank in range(world)]
    if not any(p.is_file() for p in paths):
        return None
    shadows = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the step's EMA shards are incomplete")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not (state.get("ema") or {}).get("shadow"):
            return None
        shadows.append(state["ema"]["shadow"])
    return shadows


def _consolidate_ema(folder: Path, rank0_shadow: dict | None, shapes: dict, marker: dict) -> dict | None:
    shards = _rank_shadows(folder, int(marker.get("world_size") or 1)) or ([rank0_shadow] if rank0_shadow else None)
    if shards is None:
        return None
    ema = {}
    for name in shards[0]:
        if name not in shapes:
            raise ValueError(f"the EMA of {folder} has a parameter {name!r} the model does not have")
        shape, pieces = torch.Size(shapes[name]), [s[name] for s in shards]
        if pieces[0].shape == shape:  # replicated (single process, DDP, ZeRO-2)
            ema[name] = pieces[0].float()
            continue
        flat = torch.cat([p.reshape(-1).float() for p in pieces])
        if flat.numel() < shape.numel():
            raise ValueError(f"the EMA of {folder} holds only part of {name} ({flat.numel()} of {shape.numel()} "
                             f"values from {len(pieces)} of {marker.get('world_size', '?')} ranks): it cannot be "
                             "consolidated; export with --weights raw")
        ema[name] = flat[:shape.numel()].view(shape).clone()
    return ema


# ---- choosing weights and describing them --------------------------------------------------------------------
def choose_weights(weights: str, state: StepState) -> tuple[str, str]:
    """("ema" | "raw", why)."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    has_ema = state.ema is not None
    if weights == "ema" and not has_ema:
        raise ValueError(f"{state.folder} has no EMA weights (the run had optim.ema_beta=null); use --weights raw")
    if weights != "auto":
        return weights, "requested"
    if not has_ema:
        return "raw", "the run kept no EMA"
    val = state.marker.get("validation") or {}
    if "raw" in val and "ema" in val:
        raw, ema = val["raw"]["loss"], val["ema"]["loss"]
        kind = "ema" if ema <= raw else "raw"
        return kind, f"validation at step {val.get('step')}: EMA loss {ema:.6g} vs raw {raw:.6g}"
    return "ema", "no validation before this checkpoint; EMA preferred"


def train_losses(run_dir: Path, up_to_step: int, window: int = TRAIN_LOSS_WINDOW) -> dict:
    """Last train loss and the mean of the last ``window`` ones up to ``up_to_step``, from ``losses.jsonl`` (one
    line per optimizer step, kept across resumes; a step replayed after a resume counts once, its last value)."""
    path = run_dir / LOSSES_FILE
    if not path.is_file():
        return {}
    losses = {}
    for entry in (json.loads(line) for line in path.read_text().splitlines() if line.strip()):
        if entry["step"] <= up_to_step:
            losses[int(entry["step"])] = float(entry["loss"])
    if not losses:
        return {}
    steps = sorted(losses)
    last = [losses[s] for s in steps[-window:]]
    return {"last": losses[steps[-1]], "step": steps[-1], f"mean_last_{len(last)}": sum(last) / len(last)}


def model_card(run_dir: Path, cfg, state: StepState, kind: str, why: str, dtype: str, base: dict) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from .app import container

    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    val = state.marker.get("validation") or {}
    d, t = cfg.data, cfg.trainer
    world = int(state.marker.get("world_size") or int(t.devices) * int(t.num_nodes))
    try:
        horse_version = version("horse")
    except PackageNotFoundError:
        horse_version = "unknown"
    return {
        **base,
        "data": {"config": container(d), **({"description": summary["data"]} if summary.get("data") else {})},
        "training": {"run": str(cfg.name), "run_dir": str(run_dir.absolute()), "steps": state.step,
                     "samples_per_step": int(d.micro_batch) * int(d.accumulate) * world, "world_size": world,
                     "strategy": state.marker.get("strategy"), "init_from": cfg.get("init_from"),
                     "optimizer": container(cfg.optim), "nonfinite_steps": state.extra.get("nonfinite_steps", 0)},
        "losses": {"train": train_losses(run_dir, state.step),
                   "validation": {k: val[k] for k in ("step", "raw", "ema") if k in val}},
        "weights": {"used": kind, "reason": why, "dtype": dtype},
        "export": {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "horse_version": horse_version, "checkpoint": str(state.folder.relative_to(run_dir)),
                   "layout": state.layout},
    }


# ---- the export ----------------------------------------------------------------------------------------------
def _check_keys(state_dict: dict, expected: dict, source: str) -> None:
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != tuple(expected[k]))
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not match the run's model config: missing {missing[:MAX_LISTED]}, "
                         f"unexpected {unexpected[:MAX_LISTED]}, shape-mismatched {shapes[:MAX_LISTED]}")


def _absolute_codec_paths(config):
    """Codec paths in a run's config are relative to where training ran (assumed: here); the export's folder
    resolves relative paths against itself, so make them absolute."""
    codecs = {part: ({**e, "path": str(Path(e["path"]).expanduser().absolute())} if e.get("path") else dict(e))
              for part, e in config.codecs.items()}
    return dataclasses.replace(config, codecs=codecs)


def export_run(run_dir: str | Path, out_dir: str | Path, *, step: int | None = None, weights: str = "auto",
               dtype: str = "fp32", overwrite: bool = False) -> Path:
    """Write a horse checkpoint folder (``config.json`` + ``model.safetensors``) from a run's checkpoint."""
    from omegaconf import OmegaConf

    from horse.checkpoint_folder import save_checkpoint_folder
    from horse.model import DiTModel

    from .validation import export_config

    if weights not in WEIGHT_CHOICES or dtype not in DTYPES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES} and dtype one of {sorted(DTYPES)}, got "
                         f"{weights!r} and {dtype!r}")
    run_dir = Path(run_dir)
    folder = find_step(run_dir, step)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: train.py writes the run's config there")
    cfg = OmegaConf.load(config_path)
    config = _absolute_codec_paths(export_config(cfg))
    with torch.device("meta"):
        expected = {k: v.shape for k, v in DiTModel(config.dit_config()).state_dict().items()}
    state = read_step(folder, expected)
    kind, why = choose_weights(weights, state)
    state_dict = dict(state.raw)
    if kind == "ema":
        state_dict.update(state.ema)
    state_dict = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_dict.items()}
    card = model_card(run_dir, cfg, state, kind, why, dtype, dict(config.model_card))
    out = save_checkpoint_folder(out_dir, dataclasses.replace(config, model_card=card), state_dict,
                                 overwrite=overwrite)
    log.info("exported %s (%s weights: %s) to %s", folder, kind, why, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="horse export", description="A training run's checkpoint -> a horse "
                                "checkpoint folder that 'horse generate' and serve/ load.")
    p.add_argument("run_dir", help="the run's folder (outputs/<name>/)")
    p.add_argument("-o", "--output", required=True, help="checkpoint folder to write")
    p.add_argument("--step", type=int, help="export this step (default: the newest complete checkpoint)")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto",
                   help="EMA or raw weights; auto: the one with the lower validation loss (EMA without validation)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the saved weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export_run(args.run_dir, args.output, step=args.step, weights=args.weights, dtype=args.dtype,
                         overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"horse export: error: {err}", file=sys.stderr)
        return 2
    card = json.loads((out / "config.json").read_text())["model_card"]
    print(f"wrote {out}: step {card['training']['steps']}, {card['weights']['used']} weights "
          f"({card['weights']['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
