"""Endless, deterministic, resumable sample streams for one (rank, worker) slot.

Every slot ``rank * num_workers + worker`` of ``world_size * num_workers`` reads its own share and
never ends (epoch ``e`` reshuffles with ``seed + e``), so every rank can always take another step:
no end-of-epoch deadlock, and the trainer decides the number of steps.

- ``ShardStream``: reads shards. With at least one shard per slot, a slot reads whole shards
  (``order[slot::slots]``); with fewer shards, every slot reads every shard and keeps sample ``i``
  of the shard at epoch position ``p`` when ``(i + p) % slots == slot`` (each sample to exactly one
  slot). Samples keep their in-shard order, so write shards pre-shuffled.
- ``MemoryStream``: a list kept in RAM (the demo fast path: no decoding after loading); each epoch
  every slot takes an equal slice ``perm[slot::slots][:len // slots]`` of a fresh permutation.

``state_dict()`` after an item is the position right after it; ``load_state_dict`` on a fresh
stream with the same arguments continues exactly there. In a ``torch`` DataLoader use
``StreamDataset`` + ``LoaderState`` (see their docstrings).

Bad data: a transform returning ``None`` is a skip it already counted; an exception in it or an
unreadable shard is counted in ``counters`` (``skipped/<reason>``) and logged with the sample key.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Callable, Iterable, Iterator

import torch

from .shards import decode_sample, expand_shards, iter_shard

log = logging.getLogger(__name__)


def _check_slot(rank, world_size, worker, num_workers) -> tuple[int, int]:
    if world_size < 1 or num_workers < 1 or not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError(f"need 0 <= rank < world_size and 0 <= worker < num_workers, got rank {rank}/{world_size}, "
                         f"worker {worker}/{num_workers}")
    return rank * num_workers + worker, world_size * num_workers


def _permutation(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    order = list(range(n))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)  # stdlib RNG: identical on every rank/platform
    return order


def iter_raw_samples(urls: Iterable[str], counters: Counter) -> Iterator[dict]:
    """Raw samples of the shards in order; an unreadable/truncated shard is counted, logged and left."""
    for url in urls:
        try:
            yield from iter_shard(url)
        except Exception as e:  # tarfile/OSError/gopen errors: the shard's remaining samples are lost
            counters["skipped/unreadable_shard"] += 1
            log.warning("skipping the rest of unreadable shard %s: %s: %s", url, type(e).__name__, e)


def _counters_of(transform) -> Counter:
    counters = getattr(transform, "counters", None)
    return counters if isinstance(counters, Counter) else Counter()


def _apply(transform, raw: dict, counters: Counter):
    try:
        return transform(raw)
    except Exception as e:
        counters["skipped/error"] += 1
        log.warning("skipping sample %s of %s: %s: %s", raw.get("__key__"), raw.get("__url__"), type(e).__name__, e)
        return None


class ShardStream:
    """Endless stream over shards for one slot (see module docstring). ``transform(raw) -> item | None``
    defaults to ``shards.decode_sample`` (cached latent shards); use ``decode.SampleDecoder`` for MP4s."""

    def __init__(self, shards, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
                 seed: int = 0, transform: Callable[[dict], object] | None = None, shuffle: bool = True):
        self.slot, self.slots = _check_slot(rank, world_size, worker, num_workers)
        self.urls = expand_shards(shards)
        self.seed, self.shuffle = seed, shuffle
        self.transform = transform or decode_sample
        self.by_shard = len(self.urls) >= self.slots
        # share a SampleDecoder's counters so its skips and ours are reported together
        self.counters: Counter = _counters_of(self.transform)
        self.epoch, self.shard_pos, self.sample_pos = 0, 0, 0
        self._empty_epochs = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard_pos, "sample": self.sample_pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.shard_pos, self.sample_pos = int(state["epoch"]), int(state["shard"]), int(state["sample"])

    def _epoch_shards(self) -> list[int]:
        order = _permutation(len(self.urls), self.seed, self.epoch, self.shuffle)
        return order[self.slot::self.slots] if self.by_shard else order

    def __iter__(self) -> Iterator:
        while True:
            produced = False
            shards = self._epoch_shards()
            while self.shard_pos < len(shards):
                url, position = self.urls[shards[self.shard_pos]], self.shard_pos
                try:
                    for index, raw in enumerate(iter_shard(url)):
                        if index < self.sample_pos:
                            continue  # resuming inside this shard
                        self.sample_pos = index + 1
                        if not self.by_shard and (index + position) % self.slots != self.slot:
                            continue
                        item = _apply(self.transform, raw, self.counters)
                        if item is not None:
                            produced = True
                            yield item
                except Exception as e:
                    self.counters["skipped/unreadable_shard"] += 1
                    log.warning("skipping the rest of unreadable shard %s: %s: %s", url, type(e).__name__, e)
                self.shard_pos, self.sample_pos = self.shard_pos + 1, 0
            self._empty_epochs = 0 if produced else self._empty_epochs + 1
            if self._empty_epochs >= 2:  # (one empty epoch may be a resume at an epoch's very end)
                raise RuntimeError(f"slot {self.slot}/{self.slots} got no usable sample in two whole epochs of "
                                   f"{len(self.urls)} shards; see the skip counters {dict(self.counters)}")
            self.epoch, self.shard_pos, self.sample_pos = self.epoch + 1, 0, 0


class MemoryStream:
    """Endless stream over an in-RAM list (see module docstring); items are yielded as stored (no copy)."""

    def __init__(self, items: list, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
                 seed: int = 0, shuffle: bool = True):
        self.slot, self.slots = _check_slot(rank, world_size, worker, num_workers)
        if len(items) < self.slots:
            raise ValueError(f"{len(items)} samples cannot feed {self.slots} rank x worker slots; "
                             "use fewer workers/ranks or more data")
        self.items, self.seed, self.shuffle = items, seed, shuffle
        self.per_epoch = len(items) // self.slots  # equal on every slot; the remainder changes each epoch
        self.counters: Counter = Counter()
        self.epoch, self.position = 0, 0

    @classmethod
    def load(cls, shards, transform: Callable[[dict], object] | None = None, **kwargs) -> "MemoryStream":
        """Read (and transform) every sample of ``shards`` once; bad ones are skipped and counted."""
        transform = transform or decode_sample
        counters = _counters_of(transform)
        items = [item for raw in iter_raw_samples(expand_shards(shards), counters)
                 if (item := _apply(transform, raw, counters)) is not None]
        stream = cls(items, **kwargs)
        stream.counters.update(counters)
        return stream

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator:
        while True:
            order = _permutation(len(self.items), self.seed, self.epoch, self.shuffle)[self.slot::self.slots]
            while self.position < self.per_epoch:
                item = self.items[order[self.position]]
                self.position += 1
                yield item
            self.epoch, self.position = self.epoch + 1, 0


class StreamDataset(torch.utils.data.IterableDataset):
    """A stream per DataLoader worker, resumable exactly with ``LoaderState``.

    ``make_stream(rank, world_size, worker, num_workers)`` builds the slot's stream (anything with
    ``__iter__``/``state_dict``/``load_state_dict``: ``ShardStream``, ``MemoryStream``, ``PackingStream``).
    Each element is ``{"data": item, "worker": w, "state": stream state after item}``. A DataLoader
    (``batch_size=None``, in-order) takes element ``i`` from worker ``i % num_workers``; physical
    worker ``p`` plays logical worker ``(p + first_worker) % num_workers`` so a resumed run keeps the
    round-robin where the checkpoint left it.

    Checkpoint: ``loader_state.update(element)`` for every element the trainer consumes; save
    ``loader_state.state_dict()``; on resume build ``StreamDataset(..., **loader_state.resume_kwargs())``.
    """

    def __init__(self, make_stream: Callable[..., object], rank: int = 0, world_size: int = 1,
                 states: dict | None = None, first_worker: int = 0):
        super().__init__()
        self.make_stream, self.rank, self.world_size = make_stream, rank, world_size
        self.states = {int(k): v for k, v in (states or {}).items()}
        self.first_worker = first_worker

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        physical, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        worker = (physical + self.first_worker) % num_workers
        stream = self.make_stream(self.rank, self.world_size, worker, num_workers)
        if worker in self.states:
            stream.load_state_dict(self.states[worker])
        for item in stream:
            yield {"data": item, "worker": worker, "state": stream.state_dict()}


class LoaderState:
    """Tracks the consumed position of every worker of a ``StreamDataset`` for checkpoints."""

    def __init__(self, num_workers: int, state: dict | None = None):
        self.num_workers = max(1, num_workers)
        self.states = {int(k): v for k, v in (state or {}).get("states", {}).items()}
        self.next_worker = (state or {}).get("next_worker", 0)

    def update(self, element: dict) -> None:
        self.states[element["worker"]] = element["state"]
        self.next_worker = (element["worker"] + 1) % self.num_workers

    def state_dict(self) -> dict:
        return {"states": dict(self.states), "next_worker": self.next_worker}

    def resume_kwargs(self) -> dict:
        return {"states": dict(self.states), "first_worker": self.next_worker}
