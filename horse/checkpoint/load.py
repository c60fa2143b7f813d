"""Load a safetensors checkpoint into any nn.Module, shard by shard, including modules built on the `meta` device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from horse.checkpoint.safetensors_io import MAX_LISTED_KEYS, iter_file_tensors, read_checkpoint_layout


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model's state_dict."""


@dataclass
class LoadReport:
    files: list[Path]
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected_keys: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    # (key, checkpoint shape, model shape)
    mismatched_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_shapes)


def _listing(title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    shown = "".join(f"\n    {line}" for line in lines[:MAX_LISTED_KEYS])
    more = f"\n    ... and {len(lines) - MAX_LISTED_KEYS} more" if len(lines) > MAX_LISTED_KEYS else ""
    return f"\n  {title} ({len(lines)}):{shown}{more}"


def _mismatch_message(path, report: LoadReport, model_sd: dict, ckpt: dict) -> str:
    missing = [f"{k}  model {tuple(model_sd[k].shape)} {model_sd[k].dtype}" for k in report.missing_keys]
    unexpected = [f"{k}  checkpoint {ckpt[k][0].shape} {ckpt[k][0].dtype}" for k in report.unexpected_keys]
    shapes = [f"{k}  checkpoint {c} vs model {m}" for k, c, m in report.mismatched_shapes]
    return (f"checkpoint {path} does not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} shape-mismatched keys"
            + _listing("missing from the checkpoint", missing)
            + _listing("unexpected (not in the model)", unexpected)
            + _listing("shape mismatch", shapes)
            + "\n  Check that the model config matches the checkpoint, or pass strict=False to load the matching keys.")


def _target_dtype(current: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    # `dtype` overrides only floating-point entries (e.g. fp32 masters); integer/bool buffers keep theirs.
    if dtype is not None and current.is_floating_point():
        return dtype
    return current.dtype


@torch.no_grad()
def load_state_dict_folder(model: nn.Module, path: str | Path, *, strict: bool = True,
                           dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadReport:
    """Load a checkpoint folder / file (see `resolve_checkpoint_files`) into `model`, one shard at a time.

    Each tensor is cast to the dtype of the model's entry of the same name (or to `dtype` for floating-point entries).
    Entries on the `meta` device (or whose dtype changes) are replaced by the loaded tensor, on `device` for meta
    entries and on their own device otherwise; Parameter-ness and requires_grad are kept. Other entries are copied
    into in place, so optimizers holding them stay valid. Peak memory is ~ model size + one shard.

    Keys and shapes are checked from the headers before any data is read: with strict=True a mismatch raises
    CheckpointMismatchError; with strict=False the mismatching keys are skipped and listed in the returned report.
    Any parameter or persistent buffer still on `meta` afterwards raises CheckpointMismatchError.
    Tied parameters (one tensor under two names) are not re-tied when replaced.
    """
    files, layout = read_checkpoint_layout(path)
    model_sd = model.state_dict(keep_vars=True)
    report = LoadReport(files=list(files.shards))
    report.missing_keys = sorted(k for k in model_sd if k not in layout)
    report.unexpected_keys = sorted(k for k in layout if k not in model_sd)
    report.mismatched_shapes = sorted(
        (k, info.shape, tuple(model_sd[k].shape))
        for k, (info, _) in layout.items() if k in model_sd and info.shape != tuple(model_sd[k].shape))
    if strict and not report.ok:
        raise CheckpointMismatchError(_mismatch_message(path, report, model_sd, layout))

    bad_shapes = {k for k, _, _ in report.mismatched_shapes}
    for shard in files.shards:
        wanted = {k for k, (_, f) in layout.items() if f == shard and k in model_sd and k not in bad_shapes}
        if not wanted:
            continue
        replace, copy_in = {}, {}
        for name, tensor in iter_file_tensors(shard, wanted):
            current = model_sd[name]
            target_dtype = _target_dtype(current, dtype)
            if current.is_meta or current.dtype != target_dtype:
                # copy=True: the yielded tensor views a file map / decompression buffer that must not outlive the shard.
                replace[name] = tensor.to(device=device if current.is_meta else current.device, dtype=target_dtype,
                                          copy=True)
            else:
                copy_in[name] = tensor  # load_state_dict copies it into the existing tensor (any device)
            del tensor
        model.load_state_dict(replace, strict=False, assign=True)
        model.load_state_dict(copy_in, strict=False)
        report.loaded_keys += sorted(replace) + sorted(copy_in)
        del replace, copy_in

    still_meta = sorted(k for k, t in model.state_dict(keep_vars=True).items() if t.is_meta)
    if still_meta:
        raise CheckpointMismatchError(
            f"after loading {path}, {len(still_meta)} parameters/buffers are still on the meta device"
            + _listing("still on meta", still_meta)
            + "\n  They were not loaded (missing or shape-mismatched); materialise and initialise them first "
              "(e.g. model.to_empty(device=...) then init) if a partial checkpoint is intended.")
    return report
