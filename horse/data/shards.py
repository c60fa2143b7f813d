"""WebDataset shards: write samples, resolve a dataset spec to shard URLs, read raw samples back.

A sample is a dict ``{"__key__": str, "<field>.<ext>": value, ...}``; a field is stored as the tar
member ``<key>.<field>.<ext>`` and encoded by its last extension (webdataset's encoders: ``json``
dict, ``npy`` array, ``pth`` tensor, ``txt`` str, anything else raw bytes, e.g. ``mp4``).
"""

from __future__ import annotations

import glob
import io
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, tar_file_iterator

DEFAULT_MAX_SHARD_BYTES = 1 << 30  # start a new shard after ~1 GiB
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TMP_SUFFIX = ".tmp"


def _shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def _check_key(key) -> None:
    if not isinstance(key, str) or not key or "." in key.rsplit("/", 1)[-1]:
        raise ValueError(
            f"sample __key__ must be a non-empty str without '.' (webdataset splits member names at the first dot), "
            f"got {key!r}"
        )


def write_shards(samples: Iterable[dict], out_dir: str | Path, *, prefix: str = "shard", max_count: int = 1000,
                 max_size: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> list[Path]:
    """Write ``samples`` into ``out_dir/<prefix>-000000.tar, ...`` and return the shard paths.

    Each shard is written under a hidden temporary name and renamed when complete, so a crash never
    leaves a truncated shard under a real name. Existing ``<prefix>-*.tar`` shards are an error unless
    ``overwrite`` (then they are deleted first, so old and new shards never mix).
    """
    if max_count < 1 or max_size < 1:
        raise ValueError(f"max_count and max_size must be >= 1, got {max_count}, {max_size}")
    if "/" in prefix or not prefix:
        raise ValueError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob(f"{glob.escape(prefix)}-*.tar"))
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {len(old)} shard(s) named {prefix}-*.tar; "
                              "pass overwrite=True (--overwrite) or choose another output folder")
    for path in old:
        path.unlink()

    finished: list[Path] = []

    def rename(tmp_name: str) -> None:
        final = Path(tmp_name).parent / Path(tmp_name).name[1:-len(TMP_SUFFIX)]
        os.replace(tmp_name, final)
        finished.append(final)

    pattern = str(out / ("." + prefix.replace("%", "%%") + "-%06d.tar" + TMP_SUFFIX))
    writer = wds.ShardWriter(pattern, maxcount=max_count, maxsize=max_size, post=rename, verbose=0)
    count = 0
    try:
        for sample in samples:
            _check_key(sample.get("__key__"))
            writer.write(sample)
            count += 1
    except BaseException:
        writer.post = None
        writer.close()
        for tmp in out.glob(f".{glob.escape(prefix)}-*.tar{TMP_SUFFIX}"):
            tmp.unlink()
        raise
    writer.close()
    if count == 0:  # ShardWriter opens its first shard eagerly; an empty dataset has no shards
        for path in finished:
            path.unlink()
        return []
    return finished


def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def expand_shards(spec: str | Path | Iterable[str | Path]) -> list[str]:
    """A dataset spec -> the list of shard URLs, in order.

    ``spec``: a folder (its ``*.tar`` shards, sorted), a local file, a glob (``data/*.tar``), a brace
    pattern (``data/shard-{000000..000009}.tar``), any URL webdataset opens (``https://...``,
    ``pipe:...``), a ``::``-separated or Python list of these. Missing local paths raise
    ``FileNotFoundError`` now, not mid-training.
    """
    if isinstance(spec, (str, Path)):
        parts = str(spec).split("::")
    else:
        parts = [str(s) for s in spec]
    urls: list[str] = []
    for part in parts:
        if _is_url(part):
            urls.extend(expand_urls(part))
            continue
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.name.endswith(SHARD_SUFFIXES) and p.is_file())
            if not found:
                raise FileNotFoundError(f"dataset folder {path} holds no shards ({', '.join(SHARD_SUFFIXES)})")
            urls.extend(found)
            continue
        candidates = [c for pattern in expand_urls(str(path)) for c in (sorted(glob.glob(pattern))
                      if glob.has_magic(pattern) else [pattern])]
        missing = [c for c in candidates if not Path(c).is_file()]
        if missing or not candidates:
            raise FileNotFoundError(f"dataset path {part!r} does not exist or matches no shard"
                                    + (f" (missing: {missing[:3]})" if missing else ""))
        urls.extend(candidates)
    if not urls:
        raise FileNotFoundError(f"dataset spec {spec!r} names no shards")
    return urls


def iter_shard(url: str) -> Iterator[dict]:
    """Raw samples ``{"__key__", "__url__", "<field>.<ext>": bytes}`` of one shard, in tar order.

    Raises (``OSError``, ``tarfile.ReadError``...) on an unreadable or truncated shard, after the
    samples read so far; callers that skip bad shards catch ``Exception``.
    """
    stream = wds.gopen(url, "rb")
    try:
        current: dict | None = None
        for member in tar_file_iterator(stream):
            prefix, suffix = base_plus_ext(member["fname"])
            if prefix is None:
                continue
            if current is not None and prefix != current["__key__"]:
                yield current
                current = None
            if current is None:
                current = {"__key__": prefix, "__url__": url}
            current[suffix.lower()] = member["data"]
        if current is not None:
            yield current
    finally:
        stream.close()


def decode_field(name: str, data: bytes):
    """One stored field by its last extension: json -> object, npy -> array, pth -> tensor, txt -> str."""
    ext = name.rsplit(".", 1)[-1]
    if ext in ("json", "jsn"):
        return json.loads(data)
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == "pth":
        import torch  # only cached latents stored as .pth need torch
        return torch.load(io.BytesIO(data), weights_only=True)
    if ext in ("txt", "text"):
        return data.decode("utf-8")
    return data


def decode_sample(raw: dict, keep_raw: Iterable[str] = ("mp4",)) -> dict:
    """Decode every field of a raw sample except those in ``keep_raw`` (left as bytes)."""
    keep = set(keep_raw)
    return {k: (v if k.startswith("__") or k in keep else decode_field(k, v)) for k, v in raw.items()}


def read_shards(spec, decode: bool = True) -> Iterator[dict]:
    """All samples of a dataset spec in order (no error skipping: see ``stream.ShardStream`` for that)."""
    for url in expand_shards(spec):
        for raw in iter_shard(url):
            yield decode_sample(raw) if decode else raw
