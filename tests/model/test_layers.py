"""Layer maths against formulas written here: (w+1) RMSNorm, clamped activations, RoPE, gating, GQA, experts."""

import math

import numpy as np
import pytest
import torch

from horse.model import DiTModel
from horse.model.attention import packed_attention
from horse.model.layers import MultiModalityRMSNorm, gelu7, swiglu7
from horse.model.packing import text_coords, video_coords
from horse.model.rope import ElementWiseFourierEmbed, apply_rope, rope_angles, rope_bands

EPS = 1e-6


def ref_rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * (w.double() + 1)


# ---- RMSNorm --------------------------------------------------------------------------------------------
def test_rmsnorm_per_expert_chunks(rel_err):
    g = torch.Generator().manual_seed(0)
    norm = MultiModalityRMSNorm(8, num_experts=3, eps=EPS)
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5, generator=g)
    x = torch.randn(5, 8, generator=g) * 3
    for j in range(3):
        assert rel_err(norm(x, j), ref_rms(x, norm.weight[j * 8:(j + 1) * 8])) < 1e-6
    assert rel_err(norm(x, 0), norm(x, 1)) > 1e-2  # the chunks really differ


def test_rmsnorm_single_expert_ignores_the_expert_index_and_keeps_dtype(rel_err):
    g = torch.Generator().manual_seed(1)
    norm = MultiModalityRMSNorm(16, num_experts=1, eps=EPS)
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5, generator=g)
    x = torch.randn(4, 3, 16, generator=g)
    for j in range(3):
        assert rel_err(norm(x, j), ref_rms(x, norm.weight)) < 1e-6
    xb = x.bfloat16()
    yb = norm(xb)
    assert yb.dtype == torch.bfloat16
    # computed in fp32 from the bf16 input, rounded once at the end
    assert rel_err(yb, ref_rms(xb.float(), norm.weight)) < 2 ** -8
    assert torch.equal(MultiModalityRMSNorm(16).weight, torch.zeros(16))  # zero init -> scale 1


# ---- activations ----------------------------------------------------------------------------------------
def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_swiglu7_interleave_and_clamps():
    act = [9.0, -9.0, 7.5, -7.5, 3.0, -2.0, 0.5, 6.9, 0.0]
    lin = [0.3, 12.0, -12.0, 7.2, -7.2, 2.0, -1.0, 6.5, 4.0]
    u = torch.tensor([v for pair in zip(act, lin) for v in pair], dtype=torch.float64)  # [a0, l0, a1, l1, ...]
    expected = []
    for a, b in zip(act, lin):
        g, l_ = min(a, 7.0), max(min(b, 7.0), -7.0)
        expected.append(g * _sig(1.702 * g) * (l_ + 1))
    out = swiglu7(u[None])[0]
    assert out.shape == (len(act),)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # odd = linear branch: -1 there kills the output whatever the activation branch holds
    v = torch.tensor([[5.0, -1.0, -3.0, -1.0]])
    assert torch.equal(swiglu7(v), torch.zeros(1, 2))


def test_gelu7_upper_clamp_only():
    xs = [-10.0, -7.5, -1.0, 0.0, 1.0, 6.9, 7.0, 8.0, 100.0]
    expected = [min(x, 7.0) * _sig(1.702 * min(x, 7.0)) for x in xs]
    out = gelu7(torch.tensor(xs, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert out[-1] == out[-2] == out[-3]  # saturates above 7
    assert out[0] < 0  # no lower clamp: -10 * sigmoid(-17.02)


def _ref_swiglu7(u):
    g, lin = u[..., 0::2].clamp(max=7.0), u[..., 1::2].clamp(-7.0, 7.0)
    return g * torch.sigmoid(1.702 * g) * (lin + 1)


def _ref_gelu7(u):
    g = u.clamp(max=7.0)
    return g * torch.sigmoid(1.702 * g)


def _away_from_kinks(n, seed):
    # values spread over +-10, none within 0.05 of the clamp points where the derivative jumps
    u = (torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * 10
    near = (u.abs() - 7).abs() < 0.05
    return torch.where(near, u + 0.1, u)


@pytest.mark.parametrize("fn,ref", [(swiglu7, _ref_swiglu7), (gelu7, _ref_gelu7)], ids=["swiglu7", "gelu7"])
def test_activation_backward(fn, ref):
    u = _away_from_kinks(6 * 40, seed=3).reshape(6, 40).requires_grad_()
    assert (u.detach() > 7).any() and (u.detach() < -7).any()
    assert torch.autograd.gradcheck(fn, (u,))  # against finite differences
    w = torch.randn(ref(u).shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    (grad,) = torch.autograd.grad((fn(u) * w).sum(), u)
    (expected,) = torch.autograd.grad((ref(u) * w).sum(), u)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_rmsnorm_backward(rel_err):
    g = torch.Generator().manual_seed(5)
    norm = MultiModalityRMSNorm(8, num_experts=3, eps=EPS)
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5, generator=g)
    x = (torch.randn(2, 5, 8, generator=g) * 3).requires_grad_()
    w = torch.randn(2, 5, 8, generator=g)
    (norm(x, 1) * w).sum().backward()
    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    (ref_rms(x64, w64[8:16]) * w).sum().backward()
    assert rel_err(x.grad, x64.grad) < 1e-5
    assert rel_err(norm.weight.grad, w64.grad) < 1e-5
    assert torch.equal(norm.weight.grad[:8], torch.zeros(8)) and torch.equal(norm.weight.grad[16:], torch.zeros(8))


# ---- RoPE -------------------------------------------------------------------------------------------------
def test_rope_bands_computed_as_the_release_does():
    bands = rope_bands(16)
    exact = torch.tensor(10000.0 ** (-np.arange(16) / 16), dtype=torch.float64).float()
    differs = (bands != exact).nonzero().flatten().tolist()
    # spec 12.1: 1/(10000^(k/16)) in fp32 is 1 ulp off the correctly rounded value at k = 5, 6, 10, 14
    assert differs == [5, 6, 10, 14]
    ulp = torch.abs(exact.double() - torch.nextafter(exact, torch.zeros(16)).double())
    assert torch.all((bands.double() - exact.double()).abs() <= ulp * 1.01)
    assert torch.equal(DiTModel("small").adapter.rope.bands, rope_bands(8))  # head_dim 64, temperature 1e4
    demo = DiTModel("demo").adapter.rope.bands  # the demo preset's own temperature (see presets)
    assert torch.allclose(demo, torch.tensor([1.0, 100 ** -0.25, 0.1, 100 ** -0.75]))


def test_rope_max_frequency_scales_every_band():
    from horse.model.config import DiTConfig

    cfg = DiTConfig(num_layers=1, hidden_size=64, head_dim=32, num_query_groups=1, mm_layers=(), gelu7_layers=(),
                    rope_temperature=100.0, rope_max_frequency=2.5)
    bands = DiTModel(cfg).adapter.rope.bands
    assert torch.allclose(bands, 2.5 * torch.tensor([1.0, 100 ** -0.25, 0.1, 100 ** -0.75]))
    assert torch.equal(rope_bands(16, max_frequency=1.0), rope_bands(16))  # the release's bands, bit for bit
    for bad in (0.0, -1.0, 4.0):
        with pytest.raises(ValueError, match="rope_max_frequency"):
            cfg.replace(rope_max_frequency=bad)


def ref_angles(row, bands):
    """One coords row (t,h,w,T,H,W,refT,refH,refW) -> [3, nb] angles, spec 3.4 written out."""
    out = []
    for a in range(3):
        pos, size, ref = row[a], row[3 + a], row[6 + a]
        scale = 1.0 if size == 1 and ref == 1 else (ref - 1) / (size - 1)
        centre = 0.0 if a == 0 else (size - 1) / 2
        out.append([(pos - centre) * scale * b for b in bands])
    return out


ROWS = [
    (2, 3, 1, 5, 4, 3, 5, 4, 3),   # video, scale 1: t not centred, h/w centred on (size-1)/2
    (2, 3, 1, 5, 4, 3, 9, 7, 3),   # scales 2, 2, 1: centring uses size, not ref
    (6, 0, 0, 9, 1, 1, 3, 1, 1),   # v2 audio: t-scale (3-1)/(9-1) = 0.25
    (-3, 0, 0, 3, 1, 1, 1, 1, 1),  # v2 text: t-scale 0
    (0, 0, 0, 1, 1, 1, 1, 1, 1),   # a lone token: size 1 and ref 1 -> scale 1
    (1, 0, 0, 4, 1, 1, 2, 1, 1),   # v1 text: t spread over [0, 1]
]


def test_rope_angles_and_embedding_layout():
    nb = 4
    bands = rope_bands(nb)
    coords = torch.tensor(ROWS, dtype=torch.float32)
    expected = torch.tensor([ref_angles(r, bands.double().tolist()) for r in ROWS], dtype=torch.float64)
    torch.testing.assert_close(rope_angles(coords, bands).double(), expected, rtol=1e-6, atol=1e-6)
    emb = ElementWiseFourierEmbed(head_dim=8 * nb)(coords)
    flat = expected.flatten(1)  # t-bands, h-bands, w-bands
    torch.testing.assert_close(emb.double(), torch.cat([flat.sin(), flat.cos()], 1), rtol=1e-5, atol=1e-6)


def test_rope_v2_text_is_not_rotated():
    emb = ElementWiseFourierEmbed(32)(text_coords(7, "v2"))
    assert torch.equal(emb[:, :12], torch.zeros(7, 12)) and torch.equal(emb[:, 12:], torch.ones(7, 12))


def test_rope_video_positions_grow_with_resolution():
    emb = ElementWiseFourierEmbed(32)(video_coords((2, 3, 4)))
    theta_w = torch.asin(emb[:, 8:12])  # w angles of band 0..3 (small enough for asin)
    w = torch.arange(4).repeat(6).float() - 1.5
    torch.testing.assert_close(theta_w[:, 0], w, rtol=1e-6, atol=1e-6)


def test_rotate_half_on_the_first_6nb_dims():
    g = torch.Generator().manual_seed(0)
    nb, d = 4, 32
    half = 3 * nb
    theta = torch.randn(5, half, generator=g, dtype=torch.float64)
    x = torch.randn(5, 2, d, generator=g, dtype=torch.float64)
    y = apply_rope(x, torch.cat([theta.sin(), theta.cos()], 1))
    ref = x.clone()
    for i in range(half):
        c, s = theta[:, i, None].cos(), theta[:, i, None].sin()
        ref[..., i] = x[..., i] * c - x[..., i + half] * s
        ref[..., i + half] = x[..., i + half] * c + x[..., i] * s
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(y[..., 2 * half:], x[..., 2 * half:])


def test_rope_size_one_with_other_ref_is_a_clear_error():
    coords = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 1, 1]], dtype=torch.float32)
    with pytest.raises(ValueError, match="size 1"):
        rope_angles(coords, rope_bands(4))


# ---- attention: GQA mapping, gating, the whole layer against a reference -------------------------------------
def test_gqa_query_head_reads_kv_head_h_div_groups():
    g = torch.Generator().manual_seed(0)
    n, hq, hkv, d = 7, 6, 2, 8
    q, k = torch.randn(n, hq, d, generator=g), torch.randn(n, hkv, d, generator=g)
    for signal in range(hkv):
        v = torch.zeros(n, hkv, d)
        v[:, signal] = torch.randn(n, d, generator=g)
        out = packed_attention(q, k, v, [n])
        for h in range(hq):
            nonzero = bool(out[:, h].abs().sum() > 0)
            assert nonzero == (h // (hq // hkv) == signal), (signal, h)
            if nonzero:
                p = torch.softmax(q[:, h] @ k[:, signal].T / math.sqrt(d), -1)
                torch.testing.assert_close(out[:, h], p @ v[:, signal], rtol=1e-5, atol=1e-6)


def _ref_attention_heads(att, x, theta, cfg):
    """One single-expert attention layer up to (excluding) linear_proj, spec 3.6 written out in float64.
    Returns (gated [N, Hq*d], ungated [N, Hq, d])."""
    hq, hkv, d = cfg.num_heads_q, cfg.num_heads_kv, cfg.head_dim
    h = ref_rms(x, att.pre_norm.weight)
    qkv = h @ att.linear_qkv.weight.double().T
    q = qkv[:, :hq * d].unflatten(1, (hq, d))
    k = qkv[:, hq * d:(hq + hkv) * d].unflatten(1, (hkv, d))
    v = qkv[:, (hq + hkv) * d:(hq + 2 * hkv) * d].unflatten(1, (hkv, d))
    gate = qkv[:, (hq + 2 * hkv) * d:]
    q, k = ref_rms(q, att.q_norm.weight), ref_rms(k, att.k_norm.weight)
    half = theta.shape[1]
    c, s = theta.cos()[:, None], theta.sin()[:, None]

    def rot(t):
        a, b = t[..., :half], t[..., half:2 * half]
        return torch.cat([a * c - b * s, b * c + a * s, t[..., 2 * half:]], -1)
    q, k = rot(q), rot(k)
    heads = []
    for i in range(hq):
        kv = i // (hq // hkv)
        p = torch.softmax(q[:, i] @ k[:, kv].T / math.sqrt(d), -1)
        heads.append(p @ v[:, kv])
    ungated = torch.stack(heads, 1)
    return (ungated * torch.sigmoid(gate)[..., None]).flatten(1), ungated


def _one_layer_video_model(tiny_config, random_model):
    cfg = tiny_config(num_layers=1, mm_layers=(), gelu7_layers=(), head_dim=16, num_query_groups=2)
    model = random_model(cfg, seed=3)
    grid = (2, 2, 3)
    x = torch.randn(12, cfg.video_in_channels, generator=torch.Generator().manual_seed(4))
    coords = video_coords(grid)
    theta = torch.tensor([sum(ref_angles(r, model.adapter.rope.bands.double().tolist()), [])
                          for r in coords.tolist()], dtype=torch.float64)
    return cfg, model, x, coords, theta


def _capture(model, x, coords):
    att = model.block.layers[0].attention
    seen = {}

    def keep(key, value):
        seen[key] = value  # returns None: a hook's return value would replace the args/output
    h1 = model.block.layers[0].register_forward_pre_hook(lambda m, a: keep("x", a[0]))
    h2 = att.linear_proj.register_forward_pre_hook(lambda m, a: keep("o", a[0]))
    h3 = att.register_forward_hook(lambda m, a, out: keep("out", out))
    model(x, coords, torch.zeros(x.shape[0], dtype=torch.int64))
    for h in (h1, h2, h3):
        h.remove()
    return seen


def test_attention_layer_matches_reference(tiny_config, random_model, rel_err):
    cfg, model, x, coords, theta = _one_layer_video_model(tiny_config, random_model)
    att = model.block.layers[0].attention
    seen = _capture(model, x, coords)
    gated, _ = _ref_attention_heads(att, seen["x"], theta, cfg)
    assert rel_err(seen["o"], gated) < 1e-5
    assert rel_err(seen["out"], gated @ att.linear_proj.weight.double().T) < 1e-5


def test_gating_is_one_sigmoid_per_query_head(tiny_config, random_model, rel_err):
    cfg, model, x, coords, theta = _one_layer_video_model(tiny_config, random_model)
    hq, hkv, d = cfg.num_heads_q, cfg.num_heads_kv, cfg.head_dim
    att = model.block.layers[0].attention
    with torch.no_grad():
        # positive hidden states (after the (w+1) norm, w in (-0.5, 0.5)) so a constant gate row has a known sign
        model.adapter.video_embedder.bias.uniform_(3, 4)
        model.adapter.video_embedder.weight.mul_(0.1)
        gates = att.linear_qkv.weight[(hq + 2 * hkv) * d:]
        gates[0] = -50.0   # sigmoid -> 0: head 0 contributes nothing
        gates[1] = 0.0     # sigmoid(0) = 1/2
        gates[2:] = 50.0   # sigmoid -> 1
    seen = _capture(model, x, coords)
    _, ungated = _ref_attention_heads(att, seen["x"], theta, cfg)
    o = seen["o"].unflatten(1, (hq, d)).double()
    assert o[:, 0].abs().max() < 1e-20
    assert rel_err(o[:, 1], 0.5 * ungated[:, 1]) < 1e-5
    assert rel_err(o[:, 2:], ungated[:, 2:]) < 1e-5


def test_expert_chunk_j_serves_modality_j(tiny_config, random_model, make_pack):
    cfg = tiny_config(num_layers=1, mm_layers=(0,), gelu7_layers=())
    packed, _ = make_pack(cfg, [dict(frames=1, h=2, w=2), dict(frames=1, h=2, w=4, audio=3, text=2)])
    model = random_model(cfg, seed=5)
    base = model(**packed.model_inputs(), return_intermediates=True).hidden_states[0]
    for j in range(3):
        with torch.no_grad():  # change expert j of the MLP pre-norm: only modality-j rows may move
            model.block.layers[0].mlp.pre_norm.weight[j * cfg.hidden_size:(j + 1) * cfg.hidden_size] += 0.3
        h = model(**packed.model_inputs(), return_intermediates=True).hidden_states[0]
        changed = (h - base).abs().amax(1) > 0
        assert torch.equal(changed, packed.modality == j), j
        base = h
