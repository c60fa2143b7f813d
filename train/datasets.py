"""Training data: shapes-AV generated and latent-cached once, or a user's cached latent shards.

Everything lands in RAM as tensors (the demo dataset is a few hundred MB at most),
so the loader costs nothing after start-up; larger datasets stream from the
cached shards through ``ShardStream``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train: list[dict]
    val: list[dict]
    val_captions: list[str]
    description: dict


def cache_root() -> Path:
    return Path(os.environ.get("HORSE_CACHE", Path.home() / ".cache" / "horse"))


def _tensors(cached: dict) -> dict:
    return {"video": torch.as_tensor(cached["video.npy"]).float(),
            "audio_mean": torch.as_tensor(cached["audio_mean.npy"]).float(),
            "audio_scale": torch.as_tensor(cached["audio_scale.npy"]).float(),
            "text": torch.as_tensor(cached["text.npy"]).float()}


def load_cached(folder: str | Path, expected_inputs: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(tensors, json) of every sample of a latent cache; refuses a stale cache."""
    from horse.data.cache import check_cache
    from horse.data.shards import expand_shards, read_shards

    folder = Path(folder)
    if expected_inputs is not None:
        check_cache(folder, expected_inputs)
    items, infos = [], []
    for sample in read_shards(expand_shards(str(folder))):
        items.append(_tensors(sample))
        infos.append(sample["json"])
    if not items:
        raise ValueError(f"the latent cache {folder} holds no samples")
    return items, infos


def shapes_av_data(data: DictConfig) -> TrainingData:
    from horse.data.cache import DemoCodecBundle, cache_dataset, cache_inputs
    from horse.data.decode import ClipConfig
    from horse.data.shapes import ShapesConfig, dataset_id, make_shapes, split_shards

    shapes_cfg = ShapesConfig(**OmegaConf.to_container(data.shapes, resolve=True))
    counts = {"train": data.num_train, "val": data.num_val, "test": data.num_test}
    root = make_shapes(None, num_train=counts["train"], num_val=counts["val"], num_test=counts["test"],
                       seed=data.seed, config=shapes_cfg)
    clip = ClipConfig(fps=shapes_cfg.fps, frame_counts=(shapes_cfg.num_frames,),
                      sizes=((shapes_cfg.height, shapes_cfg.width),), sample_rate=data.audio_sample_rate)
    bundle = DemoCodecBundle()
    inputs = cache_inputs(bundle, clip)
    # the source dataset's id is part of the folder name, so new source data never meets an old cache
    base = cache_root() / "latents" / f"shapes_av-{dataset_id(shapes_cfg, data.seed, counts)}"
    out = {}
    for split in ("train", "val"):
        report = cache_dataset(split_shards(root, split), base / split, bundle, clip,
                               workers=int(data.get("cache_workers", 0)))
        log.info("latent cache %s/%s: %s (%d samples)", base.name, split, report.status,
                 report.manifest.get("num_samples", 0))
        out[split] = load_cached(base / split, inputs)
    return TrainingData(out["train"][0], out["val"][0], [j["caption"] for j in out["val"][1]],
                        {"dataset": "shapes_av", "source": str(root), "cache": str(base),
                         "num_train": len(out["train"][0]), "num_val": len(out["val"][0])})


def cached_latents_data(data: DictConfig) -> TrainingData:
    train, _ = load_cached(data.train_cache)
    val, infos = load_cached(data.val_cache) if data.get("val_cache") else ([], [])
    return TrainingData(train, val, [j.get("caption", "") for j in infos],
                        {"dataset": "cached_latents", "train": str(data.train_cache)})


def build_data(data: DictConfig) -> TrainingData:
    kinds = {"shapes_av": shapes_av_data, "cached_latents": cached_latents_data}
    if data.kind not in kinds:
        raise ValueError(f"data.kind must be one of {sorted(kinds)}, got {data.kind!r}")
    return kinds[data.kind](data)
