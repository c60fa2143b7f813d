"""Packed attention: samples never see each other, local attention is the union of its ranges (spec section 6),
and nothing ever builds a mask or a cross-sample score matrix."""

import math

import pytest
import torch
import torch.nn.functional as F

import horse.model.dit as dit_module
from horse.model.attention import LocalAttentionPlan, packed_attention

PACK_SHAPES = [dict(frames=2, h=4, w=4, audio=5, text=3),   # 8 + 5 + 3 = 16 tokens
               dict(frames=1, h=2, w=4, audio=3, text=2),   # 2 + 3 + 2 = 7
               dict(frames=3, h=2, w=2, audio=0, text=5)]   # 3 + 5 = 8
LOCAL_SHAPE = dict(frames=5, h=4, w=4, audio=5, text=3)     # 5 frames x 4 tokens + 8


def release_local_ranges(num_video, frames, total, window, offset=0):
    """spec section 6, written out: per frame i, q = frame i, k = frames i-R..i+R; video -> audio+text; rest -> all."""
    per = num_video // frames
    q = [(offset + i * per, offset + (i + 1) * per) for i in range(frames)]
    k = [(offset + max(0, (i - window) * per), offset + min(num_video, (i + window + 1) * per)) for i in range(frames)]
    q += [(offset, offset + num_video), (offset + num_video, offset + total)]
    k += [(offset + num_video, offset + total), (offset, offset + total)]
    return q, k


def masked_reference(q, k, v, q_ranges, k_ranges):
    """Dense float64 attention with an explicit N x N mask: query i sees the union of k-ranges of its q-ranges."""
    n = q.shape[0]
    mask = torch.zeros(n, n, dtype=torch.bool)
    for (qs, qe), (ks, ke) in zip(q_ranges, k_ranges):
        mask[qs:qe, ks:ke] = True
    groups = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(groups, 1), v.double().repeat_interleave(groups, 1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) / math.sqrt(q.shape[-1])
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    return torch.einsum("hqk,khd->qhd", p, v)


def _qkv(n, seed=0, hq=4, hkv=2, d=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, hq, d, generator=g), torch.randn(n, hkv, d, generator=g),
            torch.randn(n, hkv, d, generator=g))


# ---- packing: a pack equals its samples run alone ---------------------------------------------------------
@pytest.mark.parametrize("shapes", [PACK_SHAPES, [PACK_SHAPES[1], PACK_SHAPES[1]]], ids=["3-unequal", "2-equal"])
def test_pack_equals_samples_alone(tiny_config, random_model, make_pack, rel_err, shapes):
    cfg = tiny_config()
    model = random_model(cfg)
    packed, samples = make_pack(cfg, shapes, seed=1)
    out = model(**packed.model_inputs())
    cu = packed.cu_seqlens.tolist()
    for i in range(len(samples)):
        sl = slice(cu[i], cu[i + 1])
        ref = model(packed.x[sl], packed.coords[sl], packed.modality[sl])
        assert rel_err(out[sl], ref) <= 1e-6, i
    # without cu_seqlens the samples would attend to each other: the outputs must differ
    mixed = model(packed.x, packed.coords, packed.modality)
    assert rel_err(mixed, out) > 1e-4


# ---- local attention against a dense masked reference --------------------------------------------------------
def test_local_plan_matches_masked_reference_release_ranges(rel_err):
    nv, frames, total = 20, 5, 28
    q, k, v = _qkv(total)
    qr, kr = release_local_ranges(nv, frames, total, window=1)
    plan = LocalAttentionPlan.from_ranges(qr, kr, total)
    out = packed_attention(q, k, v, [total], local=plan)
    assert rel_err(out, masked_reference(q, k, v, qr, kr)) <= 1e-6
    # the window really restricts: full attention differs
    assert rel_err(packed_attention(q, k, v, [total]), out) > 1e-3


def test_local_plan_union_of_overlapping_q_ranges(rel_err):
    n = 12
    q, k, v = _qkv(n, seed=1)
    qr = [(0, 6), (3, 10), (8, 12), (0, 12), (5, 7)]
    kr = [(0, 3), (6, 9), (10, 12), (11, 12), (2, 5)]  # some k-ranges of one query overlap, some are disjoint
    plan = LocalAttentionPlan.from_ranges(qr, kr, n)
    assert rel_err(packed_attention(q, k, v, [n], local=plan), masked_reference(q, k, v, qr, kr)) <= 1e-6


def test_local_plan_rejects_uncovered_queries_and_bad_ranges():
    with pytest.raises(ValueError, match="no q-range"):
        LocalAttentionPlan.from_ranges([(0, 4)], [(0, 8)], 8)
    with pytest.raises(ValueError):
        LocalAttentionPlan.from_ranges([(0, 9)], [(0, 8)], 8)
    with pytest.raises(ValueError):
        LocalAttentionPlan.from_ranges([(0, 8), (0, 4)], [(0, 8)], 8)


def _local_model(tiny_config, random_model):
    cfg = tiny_config(local_attn_layers=(0, 2))
    return cfg, random_model(cfg, seed=2)


def test_local_window_equals_explicit_release_ranges(tiny_config, random_model, make_pack, rel_err):
    cfg, model = _local_model(tiny_config, random_model)
    packed, _ = make_pack(cfg, [LOCAL_SHAPE])
    by_window = model(**packed.model_inputs(), local_window=1)
    ranges = release_local_ranges(20, 5, packed.num_tokens, window=1)
    by_ranges = model(**packed.model_inputs(), local_ranges=ranges)
    assert rel_err(by_window, by_ranges) <= 1e-6
    assert rel_err(model(**packed.model_inputs(), local_window=5), by_window) > 1e-4
    # without an explicit window the config's local_frame_window (the release's 11) applies
    assert rel_err(model(**packed.model_inputs()), model(**packed.model_inputs(), local_window=11)) <= 1e-6
    narrow = random_model(cfg.replace(local_frame_window=1), seed=2)
    assert rel_err(narrow(**packed.model_inputs()), by_window) <= 1e-6
    with pytest.raises(ValueError, match="local_frame_window"):
        cfg.replace(local_frame_window=-1)


def test_model_uses_the_union_mask_in_local_layers_only(tiny_config, random_model, make_pack, rel_err,
                                                        monkeypatch):
    cfg, model = _local_model(tiny_config, random_model)
    packed, _ = make_pack(cfg, [LOCAL_SHAPE])
    n = packed.num_tokens
    qr, kr = release_local_ranges(20, 5, n, window=1)
    expected = model(**packed.model_inputs(), local_ranges=(qr, kr))
    calls = []

    def reference(q, k, v, seqlens, **kwargs):
        layer = len(calls) % cfg.num_layers  # one attention call per layer, in layer order
        calls.append(layer)
        ranges = (qr, kr) if layer in cfg.local_attn_layers else ([(0, n)], [(0, n)])
        return masked_reference(q, k, v, *ranges).to(q.dtype)
    monkeypatch.setattr(dit_module, "packed_attention", reference)
    got = model(**packed.model_inputs(), local_ranges=(qr, kr))
    assert calls == list(range(cfg.num_layers))
    assert rel_err(expected, got) <= 1e-6


def test_local_window_in_a_pack_equals_samples_alone(tiny_config, random_model, make_pack, rel_err):
    cfg, model = _local_model(tiny_config, random_model)
    shapes = [LOCAL_SHAPE, dict(frames=3, h=2, w=4, audio=2, text=2)]
    packed, _ = make_pack(cfg, shapes, seed=3)
    out = model(**packed.model_inputs(), local_window=1)
    cu = packed.cu_seqlens.tolist()
    for i in range(2):
        sl = slice(cu[i], cu[i + 1])
        ref = model(packed.x[sl], packed.coords[sl], packed.modality[sl], local_window=1)
        assert rel_err(out[sl], ref) <= 1e-6


# ---- guard: no masks, no cross-sample attention --------------------------------------------------------------
def _record_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        mask = args[0] if args else kwargs.get("attn_mask")
        calls.append((q.shape[-2], k.shape[-2], mask))
        return real(q, k, v, *args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("local", [False, True], ids=["full", "local"])
def test_no_mask_and_no_cross_sample_attention(tiny_config, random_model, make_pack, monkeypatch, local):
    cfg = tiny_config(local_attn_layers=(1,) if local else ())
    model = random_model(cfg)
    shapes = [LOCAL_SHAPE, *PACK_SHAPES] if local else PACK_SHAPES
    packed, _ = make_pack(cfg, shapes)
    longest = max(torch.diff(packed.cu_seqlens).tolist())
    calls = _record_sdpa(monkeypatch)
    model(**packed.model_inputs(), **({"local_window": 1} if local else {}))
    assert calls, "the spy saw no attention call"
    assert all(mask is None for _, _, mask in calls)
    assert all(lq <= longest and lk <= longest for lq, lk, _ in calls), [c[:2] for c in calls]
    if local:  # the local layer's video queries see fewer keys than the whole sample
        assert min(lk for _, lk, _ in calls) < longest


def test_token_order_within_a_sample_does_not_matter(tiny_config, random_model, make_pack, rel_err):
    """spec 3.2: experts run on modality groups, attention in pack order; a shuffled sample gives shuffled outputs."""
    cfg = tiny_config()
    model = random_model(cfg)
    packed, _ = make_pack(cfg, [PACK_SHAPES[0]])
    out = model(packed.x, packed.coords, packed.modality)
    perm = torch.randperm(packed.num_tokens, generator=torch.Generator().manual_seed(0))
    shuffled = model(packed.x[perm], packed.coords[perm], packed.modality[perm])
    assert rel_err(shuffled, out[perm]) <= 1e-6
