"""Save a state_dict as a safetensors checkpoint folder (single file or shards + index, optionally zstd), atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import torch
import zstandard
from safetensors.torch import save_file

from horse.checkpoint.safetensors_io import INDEX_FILE_NAME, SINGLE_FILE_NAME, ZST_SUFFIX

# zstd level 3 is the CLI default: fast, and bf16/fp32 weights barely compress further at higher levels.
DEFAULT_ZSTD_LEVEL = 3
SHARD_NAME_PATTERN = "model-{index:05d}-of-{count:05d}.safetensors"
# Files an existing checkpoint folder may hold for overwrite=True to replace it (anything else is refused).
CHECKPOINT_FILE_RE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.zst)?|model\.safetensors\.index\.json")


def _hf_splitter():
    """huggingface_hub's shard splitter, or None (imported lazily: huggingface_hub is optional and slow to import)."""
    try:
        from huggingface_hub import split_torch_state_dict_into_shards
    except ImportError:
        return None
    return split_torch_state_dict_into_shards


def _prepare_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous tensors, left on their device (moved to CPU one shard at a time when written);
    tensors sharing storage (or viewing part of one) are cloned."""
    tensors = {}
    for name, t in state_dict.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} must map a str to a torch.Tensor, got {type(t).__name__}")
        if t.is_meta:
            raise ValueError(f"state_dict entry {name!r} is on the meta device and has no data to save")
        tensors[name] = t.detach().contiguous()
    storage_users: dict[int, int] = {}
    for t in tensors.values():
        ptr = t.untyped_storage().data_ptr()
        storage_users[ptr] = storage_users.get(ptr, 0) + 1
    for name, t in tensors.items():
        storage = t.untyped_storage()
        # safetensors refuses shared storage; a partial view would also make size-based sharding overcount.
        if storage_users[storage.data_ptr()] > 1 or storage.nbytes() != t.numel() * t.element_size():
            tensors[name] = t.clone()
    return tensors


def _greedy_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    # Fallback when huggingface_hub is absent: fill shards in key order, a tensor bigger than the limit gets its own.
    shards, current, size = [], [], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int | None) -> dict[str, list[str]]:
    """File name -> tensor names. One `model.safetensors` unless the tensors exceed `max_shard_bytes`."""
    if max_shard_bytes is None:
        return {SINGLE_FILE_NAME: list(tensors)}
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    splitter = _hf_splitter()
    if splitter is not None and tensors:
        split = splitter(
            tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_bytes)
        groups = list(split.filename_to_tensors.values())
    else:
        groups = _greedy_shards(tensors, max_shard_bytes)
    if len(groups) == 1:
        return {SINGLE_FILE_NAME: groups[0]}
    return {SHARD_NAME_PATTERN.format(index=i + 1, count=len(groups)): g for i, g in enumerate(groups)}


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list, so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _compress_zst(src: Path, level: int) -> Path:
    dst = src.with_name(src.name + ZST_SUFFIX)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        # Recording the size in the frame header lets the loader decompress into one preallocated buffer.
        zstandard.ZstdCompressor(level=level).copy_stream(fin, fout, size=src.stat().st_size)
    src.unlink()
    return dst


def _write_checkpoint(tensors: dict[str, torch.Tensor], folder: Path, plan: dict[str, list[str]],
                      metadata: dict[str, str], compress_zstd: bool, zstd_level: int, fsync: bool) -> None:
    for file_name, names in plan.items():
        file = folder / file_name
        save_file({n: tensors[n].to("cpu") for n in names}, file, metadata={"format": "pt", **metadata})
        if compress_zstd:
            file = _compress_zst(file, zstd_level)
        if fsync:
            fsync_path(file)
    if len(plan) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total, **metadata},
                 "weight_map": {n: f for f, names in plan.items() for n in names}}
        (folder / INDEX_FILE_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
        if fsync:
            fsync_path(folder / INDEX_FILE_NAME)


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final`; an existing `final` is moved aside first and deleted only after the swap."""
    if not final.exists():
        os.replace(tmp, final)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, backup / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(backup / final.name, final)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def save_state_dict_folder(state_dict: Mapping[str, torch.Tensor], path: str | Path, *,
                           max_shard_bytes: int | None = None, compress_zstd: bool = False,
                           metadata: Mapping[str, str] | None = None, overwrite: bool = False,
                           zstd_level: int = DEFAULT_ZSTD_LEVEL, fsync: bool = True) -> Path:
    """Write `state_dict` to the folder `path` as `model.safetensors`, or as shards of at most `max_shard_bytes`
    (`model-0000k-of-0000N.safetensors` + `model.safetensors.index.json`), each optionally compressed to `X.zst`.

    Everything is written into a temporary folder next to `path` and renamed into place at the end, so a crash never
    leaves a partial checkpoint under `path` and an existing checkpoint there (`overwrite=True`) stays intact until
    the new one is complete. `metadata` (str -> str) goes into every shard header and the index. Returns `path`.
    """
    final = Path(path)
    metadata = dict(metadata or {})
    bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise ValueError(f"safetensors metadata must map str to str; offending keys: {bad}")
    if final.exists() and not final.is_dir():
        raise ValueError(f"{final} exists and is not a folder; save_state_dict_folder writes a checkpoint folder")
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"checkpoint folder {final} already exists; pass overwrite=True to replace it")
        foreign = sorted(p.name for p in final.iterdir() if not CHECKPOINT_FILE_RE.fullmatch(p.name))
        if foreign:
            raise ValueError(f"refusing to replace {final}: it holds non-checkpoint entries {foreign[:10]} that "
                             "would be deleted; save into a dedicated folder")

    tensors = _prepare_tensors(state_dict)
    plan = plan_shards(tensors, max_shard_bytes)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        _write_checkpoint(tensors, tmp, plan, metadata, compress_zstd, zstd_level, fsync)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0o700
        _replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if fsync:
        fsync_path(final.parent)
    return final
