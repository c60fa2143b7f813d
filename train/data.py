"""Data for training: a stream of optimizer-step "windows" (lists of micro-batches) per rank.

One loader element is one optimizer step, so the trainer knows every micro-batch's
token count before the first backward (needed for a token-weighted mean under
gradient accumulation). Windows come from ``horse.data`` streams through
``StreamDataset``/``LoaderState``, so a resumed run sees exactly the data it would
have seen, with any number of loader workers.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Iterator

import torch

from horse.data.stream import LoaderState, MemoryStream, StreamDataset

log = logging.getLogger(__name__)


class WindowStream:
    """Groups an item stream into windows of ``accumulate`` micro-batches of ``micro_batch`` items."""

    def __init__(self, inner, micro_batch: int, accumulate: int):
        if micro_batch < 1 or accumulate < 1:
            raise ValueError(f"micro_batch and accumulate must be >= 1, got {micro_batch} and {accumulate}")
        self.inner, self.micro_batch, self.accumulate = inner, micro_batch, accumulate

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def __iter__(self) -> Iterator[list[list[dict]]]:
        it = iter(self.inner)
        while True:
            yield [[_fresh(next(it)) for _ in range(self.micro_batch)] for _ in range(self.accumulate)]


def _fresh(item: dict) -> dict:
    # A DataLoader worker moves every tensor it sends into shared memory, in place: sending the
    # dataset's own tensors would, over an epoch, move the whole in-RAM dataset into /dev/shm (one
    # shared file, or one open descriptor, per tensor). Copies are freed once the step is done.
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}


def _make_memory_window_stream(rank, world_size, worker, num_workers, *, items, seed, micro_batch, accumulate):
    inner = MemoryStream(items, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers, seed=seed)
    return WindowStream(inner, micro_batch, accumulate)


def _share_tensors_through_files() -> None:
    """Worker -> trainer tensors travel as shared-memory *files*, not file descriptors: a window holds
    ~4 tensors per sample, and with the default strategy a long run exhausts the open-file limit
    (the trainer dies with EOFError in ``rebuild_storage_fd``)."""
    import torch.multiprocessing as mp
    if mp.get_sharing_strategy() != "file_system":
        mp.set_sharing_strategy("file_system")


def window_loader(items: list, *, rank: int, world_size: int, seed: int, micro_batch: int, accumulate: int,
                  num_workers: int, loader_state: LoaderState | None = None) -> torch.utils.data.DataLoader:
    """An endless DataLoader of windows over in-memory samples; resumable through ``loader_state``."""
    if num_workers > 0:
        _share_tensors_through_files()
    make: Callable = functools.partial(_make_memory_window_stream, items=items, seed=seed,
                                       micro_batch=micro_batch, accumulate=accumulate)
    kwargs = loader_state.resume_kwargs() if loader_state is not None else {}
    dataset = StreamDataset(make, rank=rank, world_size=world_size, **kwargs)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                       persistent_workers=num_workers > 0, collate_fn=_identity,
                                       prefetch_factor=2 if num_workers > 0 else None)


def _identity(x):
    return x
