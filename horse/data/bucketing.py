"""Bucketing and token-budget packing: which samples share one packed sequence.

Samples are grouped by bucket ``(frames, height, width)``; within a bucket, samples are taken in
arrival order and a pack is closed when the next sample would exceed the token budget (next-fit,
one open pack per bucket). ``horse.model.packing.pack`` then lays the chosen samples out as one
token sequence with ``cu_seqlens`` (block-diagonal attention). Waste = 1 - used / budget, over all packs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterator

import torch

from horse.model.packing import PATCH, PackedBatch, pack

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 64  # samples the streaming packer plans at once (more: less waste, more memory)


def cached_bucket(sample: dict) -> tuple[int, int, int]:
    """Bucket of a decoded cached sample (its json ``bucket``: frames, height, width)."""
    return tuple(sample["json"]["bucket"])


def cached_num_tokens(sample: dict, patch=PATCH) -> int:
    """DiT tokens of a decoded cached sample: video T*h*w / patch + audio Na + text L."""
    _, t, h, w = sample["json"]["video_shape"]
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2]) + sample["json"]["audio_shape"][0] + \
        sample["json"]["text_shape"][0]


@dataclass
class PackStats:
    packs: int = 0
    samples: int = 0
    used_tokens: int = 0
    budget_tokens: int = 0
    oversized: int = 0  # samples longer than the budget, left out

    @property
    def waste(self) -> float:
        return 1.0 - self.used_tokens / self.budget_tokens if self.budget_tokens else 0.0

    def add_pack(self, tokens: int, samples: int, budget: int) -> None:
        self.packs, self.samples = self.packs + 1, self.samples + samples
        self.used_tokens, self.budget_tokens = self.used_tokens + tokens, self.budget_tokens + budget

    def summary(self) -> str:
        return (f"{self.packs} packs of {self.samples} samples, {self.samples / max(self.packs, 1):.2f} per pack, "
                f"padding waste {100 * self.waste:.1f}%" + (f", {self.oversized} over budget" if self.oversized else ""))


@dataclass
class PackPlan:
    packs: list[list[int]]                          # sample indices per pack, packs in order of their first sample
    oversized: list[int] = field(default_factory=list)
    stats: PackStats = field(default_factory=PackStats)


def plan_packs(tokens: list[int], buckets: list[Hashable] | None, budget: int, mix_buckets: bool = False,
               max_samples: int | None = None) -> PackPlan:
    """Greedy next-fit per bucket: indices of samples packed together within ``budget`` tokens."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    if buckets is not None and len(buckets) != len(tokens):
        raise ValueError(f"{len(tokens)} token counts but {len(buckets)} buckets")
    open_packs: dict[Hashable, tuple[list[int], int]] = {}
    closed: list[list[int]] = []
    plan = PackPlan([])
    for i, n in enumerate(tokens):
        if n > budget:
            plan.oversized.append(i)
            continue
        key = None if mix_buckets or buckets is None else buckets[i]
        members, used = open_packs.get(key, ([], 0))
        if members and (used + n > budget or (max_samples and len(members) >= max_samples)):
            closed.append(members)
            members, used = [], 0
        open_packs[key] = (members + [i], used + n)
    packs = sorted(closed + [m for m, _ in open_packs.values() if m], key=lambda m: m[0])
    plan.packs = packs
    for members in packs:
        plan.stats.add_pack(sum(tokens[i] for i in members), len(members), budget)
    plan.stats.oversized = len(plan.oversized)
    return plan


class PackingStream:
    """Wraps a sample stream (``ShardStream``/``MemoryStream``) into an endless stream of packs (lists of samples).

    Reads ``chunk`` samples, plans them with ``plan_packs`` and yields the packs; its state is the
    inner stream's state at the chunk start plus the packs already yielded from the chunk, so a resume
    re-reads the chunk, re-plans it identically and skips those packs (exact, nothing buffered in
    checkpoints). Samples over the budget are counted (``counters["skipped/over_budget"]``) and logged.
    """

    def __init__(self, stream, budget: int, chunk: int = DEFAULT_CHUNK, mix_buckets: bool = False,
                 max_samples: int | None = None, tokens_fn: Callable[[dict], int] = cached_num_tokens,
                 bucket_fn: Callable[[dict], Hashable] = cached_bucket):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.stream, self.budget, self.chunk = stream, budget, chunk
        self.mix_buckets, self.max_samples = mix_buckets, max_samples
        self.tokens_fn, self.bucket_fn = tokens_fn, bucket_fn
        self.stats = PackStats()
        self.counters = getattr(stream, "counters", None)
        self._chunk_state, self._emitted = stream.state_dict(), 0

    def state_dict(self) -> dict:
        return {"stream": self._chunk_state, "emitted": self._emitted}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self._chunk_state, self._emitted = state["stream"], int(state["emitted"])

    def __iter__(self) -> Iterator[list]:
        samples = iter(self.stream)
        while True:
            chunk = [next(samples) for _ in range(self.chunk)]
            tokens = [self.tokens_fn(s) for s in chunk]
            plan = plan_packs(tokens, [self.bucket_fn(s) for s in chunk], self.budget, self.mix_buckets,
                              self.max_samples)
            for i in plan.oversized:
                if self._emitted == 0 and self.counters is not None:
                    self.counters["skipped/over_budget"] += 1
                log.warning("skipping sample %s: %d tokens > budget %d", chunk[i].get("__key__"), tokens[i],
                            self.budget)
            for index, members in enumerate(plan.packs):
                if index < self._emitted:
                    continue  # yielded before the checkpoint this run resumed from
                self._emitted = index + 1
                self.stats.add_pack(sum(tokens[i] for i in members), len(members), self.budget)
                yield [chunk[i] for i in members]
            self._chunk_state, self._emitted = self.stream.state_dict(), 0


def pack_group(group: list[dict], width: int, coords_style: str = "v2",
               generator: torch.Generator | None = None) -> PackedBatch:
    """Cached samples of one pack -> ``PackedBatch`` (audio latents drawn from their posteriors)."""
    from .cache import to_training_sample
    return pack([to_training_sample(s, generator) for s in group], width, coords_style)
