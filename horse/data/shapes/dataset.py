"""Write shapes-AV as webdataset shards, once, into a shared cache folder.

Layout of a dataset folder::

    <root>/manifest.json                      config, seed, counts, code version, shard lists, "complete": true
    <root>/{train,val,test}/shapes-<split>-000000.tar ...   samples {key}.mp4 (H.264 + AAC) and {key}.json

Concurrency: callers take an exclusive ``fcntl`` lock on ``<parent>/.<name>.lock``; the first one
generates into ``<parent>/.<name>.tmp-<pid>`` and ``os.replace``s it onto ``<root>`` after writing the
manifest, so nobody ever sees half a dataset; later callers find the complete manifest and return.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from functools import partial
from pathlib import Path

from ..locks import exclusive_lock
from .config import ShapesConfig
from .generate import SPLITS, is_held_out_slot, make_sample

MANIFEST = "manifest.json"
FORMAT = "shapes-av"
DEFAULT_COUNTS = {"train": 4000, "val": 64, "test": 128}
CACHE_ENV = "HORSE_CACHE"
DEFAULT_CACHE = "~/.cache/horse"
# Source files whose change alters the stored bytes; their hash is the dataset's code version.
_CODE_FILES = [Path(__file__).with_name(n) for n in ("config.py", "render.py", "captions.py", "generate.py")]
_CODE_FILES.append(Path(__file__).resolve().parent.parent / "av_io.py")


def code_version() -> str:
    digest = hashlib.sha256()
    for path in _CODE_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def default_cache_root() -> Path:
    """``$HORSE_CACHE/shapes_av`` (``HORSE_CACHE`` defaults to ``~/.cache/horse``)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / "shapes_av"


def _identity(config: ShapesConfig, seed: int, counts: dict) -> dict:
    return {"format": FORMAT, "config": config.to_dict(), "seed": int(seed), "counts": dict(counts),
            "code_version": code_version()}


def dataset_id(config: ShapesConfig, seed: int, counts: dict) -> str:
    """Hash of config + seed + counts + code version: the default cache sub-folder name."""
    return hashlib.sha256(json.dumps(_identity(config, seed, counts), sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(root: str | Path) -> dict:
    """The manifest of a complete dataset folder (FileNotFoundError / ValueError otherwise)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root} holds no shapes-AV dataset ({MANIFEST} missing); create it with make_shapes")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise ValueError(f"{path} is not a complete shapes-AV manifest; delete {root} and regenerate it")
    return manifest


def split_shards(root: str | Path, split: str) -> list[Path]:
    """Shard paths of one split of a complete dataset, in order."""
    manifest = read_manifest(root)
    if split not in manifest["shards"]:
        raise ValueError(f"split must be one of {sorted(manifest['shards'])}, got {split!r}")
    return [Path(root) / rel for rel in manifest["shards"][split]]


def _matches(root: Path, identity: dict) -> bool:
    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return False
    return all(manifest.get(k) == v for k, v in identity.items())


def _samples(config: ShapesConfig, seed: int, split: str, count: int, pool):
    make = partial(make_sample, config, seed, split)
    if pool is None:
        return map(make, range(count))
    return pool.imap(make, range(count), chunksize=32)


def _generate(tmp: Path, config: ShapesConfig, seed: int, counts: dict, workers: int, identity: dict) -> None:
    from horse.data.shards import write_shards  # the same writer as real data

    start = time.perf_counter()
    shards, held_out = {}, {}
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"  # fork: no re-imports
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
    try:
        for split in SPLITS:
            paths = write_shards(_samples(config, seed, split, counts[split], pool), tmp / split,
                                 prefix=f"shapes-{split}", max_count=config.shard_max_count)
            shards[split] = [str(p.relative_to(tmp)) for p in paths]
            held_out[split] = sum(is_held_out_slot(split, i, config) for i in range(counts[split]))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    manifest = {**identity, "complete": True, "shards": shards, "held_out_clips": held_out,
                "generation_id": uuid.uuid4().hex, "created_unix": time.time(),
                "generation_seconds": round(time.perf_counter() - start, 3)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))


def make_shapes(out_dir: str | Path | None = None, num_train: int = DEFAULT_COUNTS["train"],
                num_val: int = DEFAULT_COUNTS["val"], num_test: int = DEFAULT_COUNTS["test"], seed: int = 0,
                config: ShapesConfig | None = None, *, workers: int = 2, overwrite: bool = False) -> Path:
    """Generate shapes-AV into ``out_dir`` (default ``default_cache_root()/<dataset_id>``) and return it.

    A no-op when ``out_dir`` already holds a complete dataset of the same config, seed, counts and code
    version. A different dataset there is an error unless ``overwrite``. Safe to call from parallel
    processes (see module docstring).
    """
    config = config or ShapesConfig()
    counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
    if min(counts.values()) < 0:
        raise ValueError(f"clip counts must be >= 0, got {counts}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    identity = _identity(config, seed, counts)
    root = Path(out_dir).expanduser() if out_dir is not None else default_cache_root() / dataset_id(config, seed, counts)
    root = root.absolute()
    with exclusive_lock(root.parent / f".{root.name}.lock"):
        if _matches(root, identity):
            return root
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} is a file; choose a folder for the shapes-AV dataset")
        if root.exists() and any(root.iterdir()) and not overwrite:
            raise ValueError(f"{root} already holds something other than this shapes-AV dataset (different "
                             "config, seed, counts or code version); pass overwrite=True (--overwrite) or another folder")
        for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by a crashed generator: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        try:
            _generate(tmp, config, seed, counts, workers, identity)
            if root.exists():
                trash = root.parent / f".{root.name}.tmp-old-{os.getpid()}"
                os.replace(root, trash)
                shutil.rmtree(trash)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
