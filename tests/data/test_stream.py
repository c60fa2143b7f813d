"""Rank/worker sharding without duplicates or gaps, equal steps, reshuffling and exact resume."""

import itertools
from collections import Counter

import pytest
import torch

from horse.data.shards import write_shards
from horse.data.stream import LoaderState, MemoryStream, ShardStream, StreamDataset


def _keys(stream, n):
    return [s["__key__"] if isinstance(s, dict) else s for s in itertools.islice(iter(stream), n)]


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    """30 samples in 10 shards (by-shard mode for 4 slots) and in 2 shards (by-sample mode)."""
    root = tmp_path_factory.mktemp("streams")
    samples = [{"__key__": f"s{i:02d}", "txt": str(i)} for i in range(30)]
    many = write_shards(samples, root / "many", max_count=3)
    few = write_shards(samples, root / "few", max_count=15)
    return {"many": (root / "many", len(many)), "few": (root / "few", len(few))}


@pytest.mark.parametrize("layout", ["many", "few"])
def test_shard_stream_partitions_each_epoch(shard_dirs, layout):
    path, num_shards = shard_dirs[layout]
    world, workers = 2, 2
    per_slot = {}
    for rank, worker in itertools.product(range(world), range(workers)):
        stream = ShardStream(path, rank, world, worker, workers, seed=5)
        assert stream.by_shard == (layout == "many")
        keys, it = [], iter(stream)
        while True:
            item = next(it)
            if stream.epoch != 0:  # the first item of epoch 1 (epoch advances before it is read)
                break
            keys.append(item["__key__"])
        per_slot[(rank, worker)] = keys
    everything = Counter(k for keys in per_slot.values() for k in keys)
    assert sorted(everything) == [f"s{i:02d}" for i in range(30)] and set(everything.values()) == {1}
    assert all(per_slot.values())  # every slot has data


def test_shard_stream_reshuffles_and_resumes_exactly(shard_dirs):
    path, _ = shard_dirs["many"]
    stream = ShardStream(path, 1, 2, 0, 1, seed=0)
    first = _keys(stream, 7)
    state = stream.state_dict()
    after = _keys(stream, 40)  # continues the same generator (a new iter resumes from the state too)
    fresh = ShardStream(path, 1, 2, 0, 1, seed=0)
    fresh.load_state_dict(state)
    assert _keys(fresh, 40) == after
    epoch0 = first + after[:8]  # 15 samples per rank per epoch with 5 of 10 shards
    epoch1 = after[8:23]
    assert sorted(epoch0) != epoch0 or sorted(epoch1) != epoch1
    assert epoch0 != epoch1  # a new epoch reshuffles the shard order


def test_memory_stream_equal_steps_no_duplicates_and_resume():
    items = list(range(23))
    world, workers = 2, 3  # 6 slots: 3 samples each per epoch, 5 left for other epochs
    epochs = {}
    for rank, worker in itertools.product(range(world), range(workers)):
        s = MemoryStream(items, rank, world, worker, workers, seed=1)
        keys = _keys(s, 6)
        epochs.setdefault(0, []).extend(keys[:3])
        epochs.setdefault(1, []).extend(keys[3:])
    for keys in epochs.values():
        assert len(keys) == 18 and len(set(keys)) == 18  # equal share per slot, no duplicates within an epoch
    assert set(epochs[0]) != set(epochs[1])  # the left-out remainder changes with the epoch
    s = MemoryStream(items, seed=4)
    head = _keys(s, 30)
    assert sorted(head[:23]) == items and head[:23] != items  # shuffled full epoch
    state = s.state_dict()
    tail = _keys(s, 10)
    r = MemoryStream(items, seed=4)
    r.load_state_dict(state)
    assert _keys(r, 10) == tail
    with pytest.raises(ValueError, match="cannot feed"):
        MemoryStream(items[:3], 0, 2, 0, 2)


def test_missing_dataset_is_an_error_at_start(tmp_path):
    with pytest.raises(FileNotFoundError):
        ShardStream(tmp_path / "missing")
    with pytest.raises(ValueError, match="rank"):
        ShardStream(tmp_path, rank=2, world_size=2)


def _make_stream(rank, world_size, worker, num_workers):
    return MemoryStream(list(range(40)), rank, world_size, worker, num_workers, seed=7)


def test_dataloader_workers_resume_exactly():
    def loader(**kwargs):
        ds = StreamDataset(_make_stream, rank=0, world_size=1, **kwargs)
        return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    reference = list(itertools.islice(loader(), 12))
    data = [e["data"] for e in reference]
    assert len(set(data[:10])) == 10  # 2 workers x 20 samples per epoch, disjoint
    state = LoaderState(2)
    for element in reference[:5]:  # stop after an odd number: worker 1 is next
        state.update(element)
    saved = state.state_dict()
    resumed = list(itertools.islice(loader(**LoaderState(2, saved).resume_kwargs()), 7))
    assert [e["data"] for e in resumed] == data[5:12]
