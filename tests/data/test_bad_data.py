"""Bad data is skipped, counted and logged with its key: never a crash, never a silent gap."""

import logging

import numpy as np
import pytest

from horse.data.av_io import encode_mp4
from horse.data.cache import DemoCodecBundle, cache_dataset
from horse.data.decode import ClipConfig, SampleDecoder
from horse.data.shards import write_shards
from horse.data.stream import MemoryStream, ShardStream

FPS, SR = 8, 2048
CFG = ClipConfig(fps=FPS, frame_counts=(8,), sizes=((16, 16),), sample_rate=SR)


def _mp4(audio=True, frames=10):
    video = np.full((frames, 16, 16, 3), 90, np.uint8)
    wave = (0.3 * np.sin(np.arange(frames * SR // FPS) * 0.3)).astype(np.float32)[None] if audio else None
    return encode_mp4(video, wave, FPS, SR if audio else None)


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = _mp4()
    samples = [
        {"__key__": "good0", "mp4": good, "json": {"caption": "a blue circle"}},
        {"__key__": "corrupt", "mp4": b"\x00\x01garbage" * 50, "json": {"caption": "x"}},
        {"__key__": "truncated", "mp4": good[: len(good) // 2], "json": {"caption": "x"}},
        {"__key__": "silent", "mp4": _mp4(audio=False), "json": {"caption": "no audio here"}},
        {"__key__": "nocaption", "mp4": good, "json": {"caption": "   "}},
        {"__key__": "short", "mp4": _mp4(frames=4), "json": {"caption": "too short"}},
        {"__key__": "badjson", "mp4": good, "json": "{not json".encode()},
        {"__key__": "novideo", "json": {"caption": "only text"}},
        {"__key__": "good1", "mp4": good, "txt": "caption from txt"},
    ]
    write_shards(samples, root, max_count=len(samples))
    (root / "shard-000001.tar").write_bytes(b"this is not a tar file" * 100)  # unreadable shard
    tail = write_shards([{"__key__": f"late{i}", "mp4": good, "json": {"caption": "c"}} for i in range(3)],
                        root / "t")[0].read_bytes()
    (root / "shard-000002.tar").write_bytes(tail[: len(tail) * 2 // 3])  # truncated mid-shard
    return root


EXPECTED_SKIPS = {"skipped/corrupt_video": 2, "skipped/missing_audio": 1, "skipped/empty_caption": 1,
                  "skipped/too_short": 1, "skipped/bad_metadata": 1, "skipped/no_video_field": 1,
                  "skipped/unreadable_shard": 2}


def test_stream_skips_counts_and_logs(bad_dataset, caplog):
    decoder = SampleDecoder(CFG)
    stream = ShardStream(bad_dataset, transform=decoder, shuffle=False)
    with caplog.at_level(logging.WARNING):
        it = iter(stream)
        keys = [next(it).key for _ in range(3)]
        while stream.epoch == 0:  # finish the epoch (the next good sample is in epoch 1)
            keys.append(next(it).key)
    good = keys[:-1]
    assert good[:2] == ["good0", "good1"] and all(k == "good0" or k == "good1" or k.startswith("late") for k in good)
    late = [k for k in good if k.startswith("late")]
    assert 1 <= len(late) <= 2  # the samples before the truncation point are kept
    # the counters hold epoch 0 plus the first (good) sample of epoch 1
    assert {k: v for k, v in stream.counters.items() if k.startswith("skipped/")} == EXPECTED_SKIPS
    assert stream.counters["decoded"] == len(keys)
    logged = caplog.text
    for key in ("corrupt", "truncated", "silent", "nocaption", "short", "badjson", "novideo", "shard-000001.tar"):
        assert key in logged


def test_cache_skips_bad_samples(bad_dataset, tmp_path):
    report = cache_dataset(bad_dataset, tmp_path, DemoCodecBundle(), CFG)
    assert report.manifest["counters"]["skipped/corrupt_video"] == 2
    assert report.manifest["counters"]["skipped/unreadable_shard"] == 2
    stream = MemoryStream.load(tmp_path)
    keys = {s["__key__"] for s in stream.items}
    assert {"good0", "good1", "late0"} <= keys <= {"good0", "good1", "late0", "late1"}
    assert report.manifest["num_samples"] == len(keys)


def test_all_bad_slot_is_a_clear_error(tmp_path):
    write_shards([{"__key__": "x", "mp4": b"junk", "json": {"caption": "c"}}], tmp_path)
    with pytest.raises(RuntimeError, match="no usable sample"):
        next(iter(ShardStream(tmp_path, transform=SampleDecoder(CFG))))
