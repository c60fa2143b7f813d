"""Shard writing/reading round trip and dataset-spec resolution."""

import numpy as np
import pytest

from horse.data.av_io import decode_mp4, encode_mp4
from horse.data.shards import expand_shards, iter_shard, read_shards, write_shards


def _samples(n):
    for i in range(n):
        yield {"__key__": f"clip{i:03d}", "txt": f"caption {i}", "json": {"index": i, "caption": f"caption {i}"},
               "audio_mean.npy": np.full((3, 2), i, np.float32)}


def test_roundtrip_with_mp4_split_and_no_tmp_left(tmp_path):
    frames = np.full((4, 16, 16, 3), 120, np.uint8)
    video = encode_mp4(frames, None, 8, None)
    samples = [dict(s, mp4=video) for s in _samples(7)]
    paths = write_shards(samples, tmp_path, prefix="train", max_count=3)
    assert [p.name for p in paths] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]  # no temporary files left
    back = list(read_shards(tmp_path))
    assert [s["__key__"] for s in back] == [f"clip{i:03d}" for i in range(7)]
    for i, s in enumerate(back):
        assert s["json"] == {"index": i, "caption": f"caption {i}"} and s["txt"] == f"caption {i}"
        np.testing.assert_array_equal(s["audio_mean.npy"], np.full((3, 2), i, np.float32))
        assert s["mp4"] == video
    assert decode_mp4(back[0]["mp4"]).frames.shape == frames.shape
    assert [len(list(iter_shard(str(p)))) for p in paths] == [3, 3, 1]


def test_existing_shards_need_overwrite_and_bad_keys_leave_nothing(tmp_path):
    write_shards(_samples(2), tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(_samples(2), tmp_path)
    assert len(write_shards(_samples(5), tmp_path, overwrite=True)) == 1
    with pytest.raises(ValueError, match="__key__"):
        write_shards([{"__key__": "a.b", "txt": "x"}], tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []
    assert write_shards([], tmp_path / "empty") == []


def test_expand_specs(tmp_path):
    paths = [str(p) for p in write_shards(_samples(4), tmp_path, max_count=1)]
    assert expand_shards(tmp_path) == paths
    assert expand_shards(str(tmp_path / "shard-*.tar")) == paths
    assert expand_shards(str(tmp_path / "shard-{000001..000002}.tar")) == paths[1:3]
    assert expand_shards(f"{paths[0]}::{paths[3]}") == [paths[0], paths[3]]
    assert expand_shards([paths[2]]) == [paths[2]]
    assert expand_shards("https://example.org/data-{0..2}.tar") == [f"https://example.org/data-{i}.tar" for i in range(3)]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_shards(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_shards(str(tmp_path / "shard-{000000..000009}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no shards"):
        expand_shards(tmp_path / "empty")
