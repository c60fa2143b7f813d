"""Encoding the latent cache in worker processes gives the same cache as encoding in-process."""

from horse.data.cache import DemoCodecBundle, cache_dataset
from horse.data.decode import ClipConfig
from horse.data.shapes import make_shapes, split_shards
from horse.data.shards import expand_shards, read_shards


def test_cache_with_workers_equals_in_process(tmp_path):
    root = make_shapes(tmp_path / "shapes", num_train=12, num_val=0, num_test=0, workers=0)
    clip = ClipConfig(fps=8, frame_counts=(16,), sizes=((32, 32),), sample_rate=2048)
    bundle = DemoCodecBundle()
    serial = cache_dataset(split_shards(root, "train"), tmp_path / "serial", bundle, clip)
    pooled = cache_dataset(split_shards(root, "train"), tmp_path / "pooled", bundle, clip, workers=2)
    assert serial.manifest["hash"] == pooled.manifest["hash"]
    assert dict(serial.counters) == dict(pooled.counters)
    a = list(read_shards(expand_shards(str(tmp_path / "serial"))))
    b = list(read_shards(expand_shards(str(tmp_path / "pooled"))))
    assert [s["__key__"] for s in a] == [s["__key__"] for s in b] and len(a) == 12
    for x, y in zip(a, b):
        for field in ("video.npy", "audio_mean.npy", "audio_scale.npy", "text.npy"):
            assert (x[field] == y[field]).all(), field
