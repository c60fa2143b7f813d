"""``horse bench loader``: what feeding the training step costs.

In one run, the same training step (forward + backward + AdamW of the model on
one micro-batch) is timed three ways, interleaved round by round so machine
noise hits all alike:

- ``memory``: the same in-memory batch every step (the loader costs nothing);
- ``stream``: batches from the in-RAM ``MemoryStream`` through a ``DataLoader``
  worker, as ``python train.py`` feeds the demo;
- ``shards``: batches decoded from the cached latent shards by ``ShardStream``
  in a worker (the path for datasets too large for RAM).

The two cores are shared between the worker and the step, so a ratio near 1
means the loader keeps up. Prints ``ratio_stream=<x> ratio_shards=<y>`` last.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from horse.data.stream import MemoryStream, ShardStream, StreamDataset
from horse.training import FlowMatchingTask, TaskConfig


def _decoded_tensors(raw: dict) -> dict:
    from horse.data.shards import decode_sample
    return _cached_tensors(decode_sample(raw))


def _cached_tensors(sample: dict) -> dict:
    return {"video": torch.as_tensor(sample["video.npy"]).float(),
            "audio_mean": torch.as_tensor(sample["audio_mean.npy"]).float(),
            "audio_scale": torch.as_tensor(sample["audio_scale.npy"]).float(),
            "text": torch.as_tensor(sample["text.npy"]).float()}


class _Batches:
    def __init__(self, inner, size: int):
        self.inner, self.size = inner, size

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def __iter__(self):
        it = iter(self.inner)
        while True:
            yield [next(it) for _ in range(self.size)]


def _memory_stream(rank, world, worker, workers, *, items, batch):
    return _Batches(MemoryStream(items, rank=rank, world_size=world, worker=worker, num_workers=workers), batch)


def _shard_stream(rank, world, worker, workers, *, shards, batch):
    inner = ShardStream(shards, rank=rank, world_size=world, worker=worker, num_workers=workers,
                        transform=_decoded_tensors)
    return _Batches(inner, batch)


def _loader(make, workers: int):
    """A function returning the next batch (``StreamDataset`` elements carry it under "data")."""
    it = iter(torch.utils.data.DataLoader(StreamDataset(make), batch_size=None, num_workers=workers,
                                          collate_fn=_identity, persistent_workers=workers > 0))
    return lambda: next(it)["data"]


def _identity(x):
    return x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="horse bench loader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--num-train", type=int, default=256, help="shapes-AV clips to generate and cache")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6, help="timed steps per feeding mode")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)

    from horse.data.cache import DemoCodecBundle, cache_dataset
    from horse.data.decode import ClipConfig
    from horse.data.shapes import ShapesConfig, make_shapes, split_shards
    from horse.data.shards import expand_shards, read_shards
    from horse.model import DiTModel

    shapes = ShapesConfig()
    root = make_shapes(None, num_train=args.num_train, num_val=0, num_test=0)
    clip = ClipConfig(fps=shapes.fps, frame_counts=(shapes.num_frames,), sizes=((shapes.height, shapes.width),),
                      sample_rate=2048)
    cache = root.parent.parent / "latents" / f"bench-{root.name}"
    cache_dataset(split_shards(root, "train"), cache, DemoCodecBundle(), clip)
    items = [_cached_tensors(s) for s in read_shards(expand_shards(str(cache)))]

    model = DiTModel(args.preset)
    task = FlowMatchingTask(model, TaskConfig(caption_dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step(batch):
        out = task.compute(batch, g)
        loss = sum(t.sum / t.count for t in out.terms.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fixed = items[:args.batch]
    feeds = {
        "memory": lambda: fixed,
        "stream": _loader(functools.partial(_memory_stream, items=items, batch=args.batch), args.workers),
        "shards": _loader(functools.partial(_shard_stream, shards=expand_shards(str(cache)), batch=args.batch),
                          args.workers),
    }
    for feed in feeds.values():  # warm-up: worker start, first batches
        step(feed())
    totals = {k: 0.0 for k in feeds}
    for _ in range(args.steps):
        for name, feed in feeds.items():
            start = time.perf_counter()
            step(feed())
            totals[name] += time.perf_counter() - start
    per = {k: v / args.steps for k, v in totals.items()}
    print(f"preset={args.preset} batch={args.batch} workers={args.workers} steps={args.steps} per mode "
          f"(interleaved); {len(items)} cached clips")
    for name, sec in per.items():
        print(f"  {name:<7} {sec * 1e3:8.1f} ms/step  {args.batch / sec:6.1f} clips/s")
    print(f"ratio_stream={per['stream'] / per['memory']:.3f} ratio_shards={per['shards'] / per['memory']:.3f}")
    return 0
