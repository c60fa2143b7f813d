"""make_shapes: shards per split, held-out pairs, determinism, caching, atomicity and parallel callers."""

import json
import multiprocessing
import time

import numpy as np
import pytest

from horse.data.av_io import decode_mp4
from horse.data.shapes import (ShapesConfig, dataset_id, make_shapes, pair_pools, read_manifest, sample_params,
                               split_shards)
from horse.data.shapes import dataset as dataset_module
from horse.data.shards import iter_shard

CONFIG = ShapesConfig()
COUNTS = {"train": 12, "val": 4, "test": 8}


def raw_samples(root, split):
    return [raw for path in split_shards(root, split) for raw in iter_shard(str(path))]


def test_splits_hold_the_right_clips(tmp_path):
    root = make_shapes(tmp_path / "ds", **{f"num_{k}": v for k, v in COUNTS.items()}, seed=3, workers=0)
    manifest = read_manifest(root)
    assert manifest["counts"] == COUNTS and manifest["complete"] is True
    held = {tuple(p) for p in CONFIG.held_out}
    for split, count in COUNTS.items():
        samples = raw_samples(root, split)
        assert [s["__key__"] for s in samples] == [f"{split}_{i:07d}" for i in range(count)]
        truths = [json.loads(s["json"]) for s in samples]
        assert all(t["split"] == split and s["mp4"][4:8] == b"ftyp" for s, t in zip(samples, truths))
        flags = [t["held_out"] for t in truths]
        assert all((t["colour"], t["shape"]) in held for t in truths if t["held_out"])
        assert all((t["colour"], t["shape"]) not in held for t in truths if not t["held_out"])
        if split == "test":
            assert sum(flags) == count // 2 == manifest["held_out_clips"]["test"]
        else:
            assert not any(flags)


def test_held_out_pairs_never_in_train_or_val():
    in_dist, held = pair_pools(CONFIG)
    assert len(held) == 3 and len(in_dist) == 21 and not set(held) & set(in_dist)
    seen = {(p["colour"], p["shape"]) for split in ("train", "val") for i in range(1500)
            for p in [sample_params(CONFIG, 0, split, i)]}
    assert seen == set(in_dist)  # every in-distribution pair occurs, no held-out one
    test_pairs = {(p["colour"], p["shape"]) for i in range(200) for p in [sample_params(CONFIG, 0, "test", i)]
                  if p["held_out"]}
    assert test_pairs == set(held)


def test_same_seed_same_dataset_whatever_the_workers(tmp_path):
    kwargs = {"num_train": 8, "num_val": 2, "num_test": 4, "seed": 7}
    one = make_shapes(tmp_path / "a", **kwargs, workers=0)
    two = make_shapes(tmp_path / "b", **kwargs, workers=2)
    other = make_shapes(tmp_path / "c", **{**kwargs, "seed": 8}, workers=0)
    for split in ("train", "val", "test"):
        a, b, c = raw_samples(one, split), raw_samples(two, split), raw_samples(other, split)
        assert [s["json"] for s in a] == [s["json"] for s in b]  # byte-identical ground truth
        assert [s["json"] for s in a] != [s["json"] for s in c]
        for sa, sb in zip(a, b):
            frames_a, frames_b = decode_mp4(sa["mp4"]).frames, decode_mp4(sb["mp4"]).frames
            assert np.array_equal(frames_a, frames_b), (
                "same seed gave different decoded frames: the MP4 encoder is not deterministic "
                "(PyAV's threaded rgb->yuv conversion; see horse/data/av_io.py)")


def test_second_call_is_a_no_op_and_mismatch_is_an_error(tmp_path):
    root = make_shapes(tmp_path / "ds", 4, 2, 2, seed=1, workers=0)
    first = read_manifest(root)["generation_id"]
    start = time.perf_counter()
    assert make_shapes(tmp_path / "ds", 4, 2, 2, seed=1, workers=0) == root
    assert time.perf_counter() - start < 0.5 and read_manifest(root)["generation_id"] == first
    with pytest.raises(ValueError, match="overwrite"):
        make_shapes(tmp_path / "ds", 4, 2, 2, seed=2, workers=0)
    make_shapes(tmp_path / "ds", 4, 2, 2, seed=2, workers=0, overwrite=True)
    assert read_manifest(root)["seed"] == 2 and read_manifest(root)["generation_id"] != first


def test_default_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HORSE_CACHE", str(tmp_path / "cache"))
    root = make_shapes(None, 2, 1, 2, seed=0, workers=0)
    assert root == tmp_path / "cache" / "shapes_av" / dataset_id(CONFIG, 0, {"train": 2, "val": 1, "test": 2})


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    real = dataset_module.make_sample

    def failing(config, seed, split, index):
        if split == "val":
            raise RuntimeError("simulated crash")
        return real(config, seed, split, index)

    monkeypatch.setattr(dataset_module, "make_sample", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        make_shapes(tmp_path / "ds", 3, 3, 3, workers=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock"]


def _call_make_shapes(out_dir, barrier, queue):
    barrier.wait()
    root = make_shapes(out_dir, 12, 4, 8, seed=5, workers=0)
    queue.put((str(root), read_manifest(root)["generation_id"]))


def test_parallel_callers_share_one_generation(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_call_make_shapes, args=(tmp_path / "ds", barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1] == (str(tmp_path / "ds"), read_manifest(tmp_path / "ds")["generation_id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]  # no half-written folder left
    assert sum(len(raw_samples(tmp_path / "ds", s)) for s in ("train", "val", "test")) == 24
