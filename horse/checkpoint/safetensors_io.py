"""Locating and reading safetensors checkpoints: single files, sharded folders, and `.zst`-compressed shards.

Layout (the HF convention, also used by the official daVinci-MagiHuman release):
  folder/model.safetensors                                  single file, or
  folder/model.safetensors.index.json + model-0000k-of-0000N.safetensors   shards.
Any file `X` may instead be stored as `X.zst` (zstd-compressed safetensors bytes); it is decompressed in-process.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import zstandard
from safetensors import safe_open

SINGLE_FILE_NAME = "model.safetensors"
INDEX_FILE_NAME = "model.safetensors.index.json"
ZST_SUFFIX = ".zst"
# safetensors refuses headers above 100 MB; a larger length means a corrupt or non-safetensors file.
MAX_HEADER_BYTES = 100_000_000
# Read size when a .zst frame does not record its decompressed size.
ZST_READ_CHUNK_BYTES = 64 * 2**20
# How many keys of each kind an error message lists before saying "... and N more".
MAX_LISTED_KEYS = 20

# safetensors dtype tags -> torch dtypes (safetensors only exposes this table privately).
_DTYPE_TAGS = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "C64": torch.complex64,
}
for _tag, _attr in [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                    ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
                    ("F8_E8M0", "float8_e8m0fnu")]:
    if hasattr(torch, _attr):
        _DTYPE_TAGS[_tag] = getattr(torch, _attr)


class TensorInfo(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class CheckpointFiles:
    """The files a checkpoint path resolves to. `shards` are the real files on disk (`X` or `X.zst`)."""

    root: Path
    shards: list[Path]
    index_path: Path | None = None
    weight_map: dict[str, str] | None = None  # key -> shard name as written in the index (without .zst)


def _plain_or_zst(path: Path) -> Path | None:
    """`path` if it exists, else `path.zst` if that exists, else None."""
    if path.is_file():
        return path
    zst = path.with_name(path.name + ZST_SUFFIX)
    return zst if zst.is_file() else None


def resolve_checkpoint_files(path: str | Path) -> CheckpointFiles:
    """Find the safetensors file(s) of a checkpoint folder or single file. Raises FileNotFoundError naming the path."""
    root = Path(path)
    if root.is_file():
        return CheckpointFiles(root=root, shards=[root])
    if root.suffix == ".safetensors":
        found = _plain_or_zst(root)
        if found is None:
            raise FileNotFoundError(f"checkpoint file {root} not found (also looked for {root}{ZST_SUFFIX})")
        return CheckpointFiles(root=root, shards=[found])
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint path {root} does not exist")

    index_path = root / INDEX_FILE_NAME
    if index_path.is_file():
        weight_map = _read_weight_map(index_path)
        shards = []
        for name in dict.fromkeys(weight_map.values()):  # unique shard names, in index order
            found = _plain_or_zst(root / name)
            if found is None:
                raise FileNotFoundError(
                    f"shard {root / name} named by {index_path} not found (also looked for {root / name}{ZST_SUFFIX})")
            shards.append(found)
        return CheckpointFiles(root=root, shards=shards, index_path=index_path, weight_map=weight_map)

    single = _plain_or_zst(root / SINGLE_FILE_NAME)
    if single is None:
        raise FileNotFoundError(
            f"checkpoint folder {root} holds neither {SINGLE_FILE_NAME}[{ZST_SUFFIX}] nor {INDEX_FILE_NAME}")
    return CheckpointFiles(root=root, shards=[single])


def _read_weight_map(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path} is not a valid safetensors index (need a JSON 'weight_map'): {err}") from err
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path}: 'weight_map' must map tensor names to shard file names")
    return weight_map


def _torch_dtype(tag: str, file: Path) -> torch.dtype:
    if tag not in _DTYPE_TAGS:
        raise ValueError(f"{file}: safetensors dtype {tag!r} has no torch equivalent in torch {torch.__version__}")
    return _DTYPE_TAGS[tag]


def _is_zst(file: Path) -> bool:
    return file.name.endswith(ZST_SUFFIX)


def _read_exact(stream, n: int, file: Path) -> bytes:
    # zstd stream readers may return short reads; loop until n bytes or EOF.
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise ValueError(f"{file} is truncated or not a safetensors file (wanted {n} bytes, got {got})")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _parse_header(raw_len: bytes, read, file: Path) -> tuple[dict, int]:
    """Parse a safetensors header (u64 little-endian length + JSON) -> (entries without metadata, data start)."""
    n = int.from_bytes(raw_len, "little")
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"{file} is not a safetensors file (header length {n} > {MAX_HEADER_BYTES})")
    try:
        header = json.loads(read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} has a corrupt safetensors header: {err}") from err
    header.pop("__metadata__", None)
    return header, 8 + n


def read_file_tensor_infos(file: str | Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of one safetensors file (plain or .zst) from its header only."""
    file = Path(file)
    if not _is_zst(file):
        with safe_open(file, framework="pt", device="cpu") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: TensorInfo(tuple(s.get_shape()), _torch_dtype(s.get_dtype(), file))
                    for name, s in slices.items()}
    with open(file, "rb") as fh:
        try:
            with zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as reader:
                header, _ = _parse_header(_read_exact(reader, 8, file), lambda n: _read_exact(reader, n, file), file)
        except zstandard.ZstdError as err:
            raise ValueError(f"{file} is not a valid zstd file: {err}") from err
    return {name: TensorInfo(tuple(e["shape"]), _torch_dtype(e["dtype"], file)) for name, e in header.items()}


def read_checkpoint_keys(path: str | Path) -> dict[str, TensorInfo]:
    """All tensor names of a checkpoint (folder or file) -> (shape, dtype), reading headers only (no tensor data)."""
    return {name: info for name, (info, _) in read_checkpoint_layout(path)[1].items()}


def read_checkpoint_layout(path: str | Path) -> tuple[CheckpointFiles, dict[str, tuple[TensorInfo, Path]]]:
    """Resolve `path` and map every tensor name to (info, the shard file holding it).

    Raises ValueError if a name appears in two shards or the index disagrees with the shard headers.
    """
    files = resolve_checkpoint_files(path)
    layout: dict[str, tuple[TensorInfo, Path]] = {}
    for shard in files.shards:
        for name, info in read_file_tensor_infos(shard).items():
            if name in layout:
                raise ValueError(f"tensor {name!r} appears in both {layout[name][1]} and {shard}")
            layout[name] = (info, shard)
    if files.weight_map is not None:
        _check_index_matches_headers(files, layout)
    return files, layout


def _check_index_matches_headers(files: CheckpointFiles, layout: dict[str, tuple[TensorInfo, Path]]) -> None:
    wrong = []
    for name, shard_name in files.weight_map.items():
        actual = layout.get(name)
        if actual is None or actual[1].name.removesuffix(ZST_SUFFIX) != shard_name:
            wrong.append(f"{name!r}: index says {shard_name}, found in {actual[1].name if actual else 'no shard'}")
    wrong += [f"{name!r}: in {shard.name} but not in the index" for name, (_, shard) in layout.items()
              if name not in files.weight_map]
    if wrong:
        shown = "\n  ".join(wrong[:MAX_LISTED_KEYS])
        more = f"\n  ... and {len(wrong) - MAX_LISTED_KEYS} more" if len(wrong) > MAX_LISTED_KEYS else ""
        raise ValueError(f"{files.index_path} disagrees with its shard headers ({len(wrong)} keys):\n  {shown}{more}")


def _decompress_zst(file: Path) -> bytearray:
    """Decompress a whole .zst file into one preallocated buffer (streaming; no zstd CLI)."""
    with open(file, "rb") as fh:
        try:
            size = zstandard.frame_content_size(fh.read(18))
        except zstandard.ZstdError as err:
            raise ValueError(f"{file} is not a valid zstd file: {err}") from err
        fh.seek(0)
        with zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as reader:
            buf = bytearray(max(size, 0))
            view, filled = memoryview(buf), 0
            while filled < len(buf):
                n = reader.readinto(view[filled:])
                if n == 0:
                    raise ValueError(f"{file} is truncated: decompressed {filled} of {size} bytes")
                filled += n
            view.release()
            # Unknown size, or further frames after the first one.
            while chunk := reader.read(ZST_READ_CHUNK_BYTES):
                buf += chunk
    return buf


def _iter_buffer_tensors(buf: bytearray, file: Path, names: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    # Hand-parsed instead of safetensors.torch.load(bytes): that copies every tensor (2x shard memory);
    # here tensors are zero-copy views into the single decompressed buffer.
    if len(buf) < 8:
        raise ValueError(f"{file} does not hold safetensors data (only {len(buf)} bytes after decompression)")
    header, start = _parse_header(bytes(buf[:8]), lambda n: bytes(buf[8:8 + n]), file)
    for name, entry in header.items():
        if names is not None and name not in names:
            continue
        dtype, shape = _torch_dtype(entry["dtype"], file), tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        numel = math.prod(shape)
        if end - begin != numel * dtype.itemsize or start + end > len(buf):
            raise ValueError(f"{file}: tensor {name!r}: data offsets {begin}..{end} do not fit {shape} {dtype}")
        if numel == 0:
            yield name, torch.empty(shape, dtype=dtype)
        else:
            yield name, torch.frombuffer(buf, dtype=dtype, count=numel, offset=start + begin).reshape(shape)


def iter_file_tensors(file: str | Path, names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, CPU tensor) from one safetensors file, optionally only `names`.

    The tensors are views, not copies: of a private memory map of a plain file (as safetensors 0.8 returns them), or of
    the buffer a .zst file is decompressed into. Copy what you keep (`.clone()`, `.to(..., copy=True)`) so the map or
    buffer is released, and the kept weights do not depend on the file staying unmodified.
    """
    file = Path(file)
    if sys.byteorder != "little":
        raise NotImplementedError("safetensors checkpoints are little-endian; big-endian hosts are not supported")
    if _is_zst(file):
        buf = _decompress_zst(file)
        yield from _iter_buffer_tensors(buf, file, names)
        return
    with safe_open(file, framework="pt", device="cpu") as f:
        for name in f.keys():
            if names is None or name in names:
                yield name, f.get_tensor(name)
