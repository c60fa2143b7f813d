"""Bucketing / packing: budget respected, waste exact, packed DiT == per-sample DiT, streaming resume."""

import itertools

import numpy as np
import pytest
import torch

from horse.data.bucketing import PackingStream, cached_num_tokens, pack_group, plan_packs
from horse.data.stream import MemoryStream
from horse.model.config import get_config
from horse.model.dit import DiTModel
from horse.model.init import init_weights
from horse.model.packing import unpack


def _cached(key, frames, height, width, text_len, seed=0):
    """A cached sample as the cache writes it (demo codec shapes: 48 channels, H/4 x W/4, Na = 4F+1)."""
    rng = np.random.default_rng(seed)
    video = rng.standard_normal((48, frames, height // 4, width // 4)).astype(np.float32)
    mean = rng.standard_normal((4 * frames + 1, 64)).astype(np.float32)
    text = rng.standard_normal((text_len, 128)).astype(np.float32)
    return {"__key__": key, "video.npy": video, "audio_mean.npy": mean, "audio_scale.npy": np.zeros_like(mean),
            "text.npy": text, "json": {"bucket": [frames, height, width], "video_shape": list(video.shape),
                                       "audio_shape": list(mean.shape), "text_shape": list(text.shape)}}


def test_token_count_formula():
    s = _cached("a", 4, 16, 24, 5)
    # video: 4 frames x (4/2) x (6/2) DiT patches; audio 4*4+1; text 5
    assert cached_num_tokens(s) == 4 * 2 * 3 + 17 + 5


def test_plan_respects_budget_buckets_and_reports_waste():
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 60, 200).tolist() + [500]
    buckets = rng.integers(0, 3, 201).tolist()
    plan = plan_packs(tokens, buckets, budget=128)
    members = sorted(i for pack in plan.packs for i in pack)
    assert members == list(range(200)) and plan.oversized == [200]  # every sample once; the giant left out
    for pack in plan.packs:
        assert sum(tokens[i] for i in pack) <= 128
        assert len({buckets[i] for i in pack}) == 1
        assert pack == sorted(pack)  # arrival order kept
    used = sum(tokens[:200])
    assert plan.stats.waste == pytest.approx(1 - used / (128 * len(plan.packs)))
    assert plan.stats.samples == 200 and plan.stats.oversized == 1
    # next-fit: a pack is closed only because its bucket's next sample did not fit
    by_bucket = {}
    for pack in plan.packs:
        by_bucket.setdefault(buckets[pack[0]], []).append(pack)
    for packs in by_bucket.values():
        for a, b in zip(packs[:-1], packs[1:]):
            assert sum(tokens[i] for i in a) + tokens[b[0]] > 128
    mixed = plan_packs(tokens, buckets, budget=128, mix_buckets=True)
    assert len(mixed.packs) <= len(plan.packs) and mixed.stats.waste <= plan.stats.waste
    assert max(len(p) for p in plan_packs(tokens, buckets, 128, max_samples=2).packs) == 2
    with pytest.raises(ValueError):
        plan_packs([1], None, budget=0)


def test_packed_forward_equals_separate_forwards():
    torch.manual_seed(0)
    cfg = get_config("demo", num_layers=2, mm_layers=(0, 1), gelu7_layers=(0,))
    model = init_weights(DiTModel(cfg), torch.Generator().manual_seed(0)).eval()
    group = [_cached("a", 2, 16, 16, 3, 1), _cached("b", 3, 16, 24, 7, 2), _cached("c", 1, 8, 8, 1, 3)]
    packed = pack_group(group, cfg.max_in_channels)
    assert packed.cu_seqlens.tolist() == [0] + list(itertools.accumulate(cached_num_tokens(s) for s in group))
    with torch.no_grad():
        together = unpack(model(**packed.model_inputs()), packed, cfg.audio_in_channels)
        leaky = model(packed.x, packed.coords, packed.modality)  # one sequence: samples attend to each other
        assert not torch.allclose(unpack(leaky, packed, cfg.audio_in_channels)[0]["video"], together[0]["video"])
        for sample, joint in zip(group, together):
            alone_pack = pack_group([sample], cfg.max_in_channels)
            alone = unpack(model(**alone_pack.model_inputs()), alone_pack, cfg.audio_in_channels)[0]
            assert alone["video"].abs().mean() > 1e-3
            torch.testing.assert_close(joint["video"], alone["video"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(joint["audio"], alone["audio"], atol=1e-5, rtol=1e-4)


def test_packing_stream_budget_and_exact_resume():
    items = [_cached(f"k{i}", 1 + i % 3, 8, 8 * (1 + i % 2), 1 + i % 5, i) for i in range(30)]
    def make():
        return PackingStream(MemoryStream(items, seed=3), budget=40, chunk=7)
    stream = make()
    it = iter(stream)
    first = [next(it) for _ in range(6)]
    state = stream.state_dict()
    rest = [[s["__key__"] for s in next(it)] for _ in range(8)]
    for pack in first:
        assert sum(cached_num_tokens(s) for s in pack) <= 40 and len({tuple(s["json"]["bucket"]) for s in pack}) == 1
    resumed = make()
    resumed.load_state_dict(state)
    it2 = iter(resumed)
    assert [[s["__key__"] for s in next(it2)] for _ in range(8)] == rest
    assert 0 <= stream.stats.waste < 1 and stream.stats.packs == 14
