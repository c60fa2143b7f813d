"""Learned RoPE frequencies (DiTConfig.rope_frequencies): the release as a special case, per-KV-head tables,
oblique paths in space-time that axis-aligned bands cannot express, training and checkpoint round trip."""

import pytest
import torch

from horse.model import DiTModel
from horse.model.init import init_weights, no_weight_decay
from horse.model.packing import video_coords
from horse.model.rope import ElementWiseFourierEmbed, apply_rope, rope_bands

SHAPES = [dict(frames=3, h=4, w=4, audio=5, text=3), dict(frames=2, h=2, w=4, audio=3, text=4)]


def _init(cfg, seed=0):
    return init_weights(DiTModel(cfg), torch.Generator().manual_seed(seed))


def test_learned_frequencies_start_as_the_release(tiny_config, make_pack):
    fixed, learned = tiny_config(), tiny_config(rope_frequencies="learned")
    a, b = _init(fixed), _init(learned)
    assert "adapter.rope.frequencies" not in a.state_dict()  # the release's key set is untouched
    b.load_state_dict({**a.state_dict(), "adapter.rope.frequencies": b.adapter.rope.frequencies.detach()})
    packed, _ = make_pack(fixed, SHAPES)
    with torch.no_grad():
        torch.testing.assert_close(b(**packed.model_inputs()), a(**packed.model_inputs()), rtol=0, atol=0)


def test_rotated_frequencies_are_the_release_bands_on_a_random_orthonormal_frame_per_kv_head():
    emb = ElementWiseFourierEmbed(32, temperature=100.0, frequencies="learned_rotated", kv_heads=3)
    emb.reset_frequencies(torch.Generator().manual_seed(0))
    f = emb.frequencies.detach()  # [3 heads, 12 pairs, 3 axes]
    bands = rope_bands(4, 100.0)
    torch.testing.assert_close(f.norm(dim=-1), bands.repeat(3).expand(3, 12))
    directions = f[:, ::4] / bands[0]  # band 0 of each axis group: the frame's three unit vectors
    torch.testing.assert_close(directions @ directions.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    assert (directions[0] - directions[1]).abs().max() > 0.1  # heads get different frames
    again = ElementWiseFourierEmbed(32, temperature=100.0, frequencies="learned_rotated", kv_heads=3)
    again.reset_frequencies(torch.Generator().manual_seed(0))
    assert torch.equal(again.frequencies, emb.frequencies)


def test_per_kv_head_tables_follow_the_gqa_mapping():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(5, 2, 6, generator=g)
    rope = torch.cat([theta.sin(), theta.cos()], -1)  # [N, 2 kv heads, 12]
    x = torch.randn(5, 6, 16, generator=g)  # 6 query heads: heads 0-2 read kv head 0, 3-5 kv head 1
    y = apply_rope(x, rope)
    for h in range(6):
        torch.testing.assert_close(y[:, h], apply_rope(x[:, h:h + 1], rope[:, h // 3])[:, 0], rtol=0, atol=0)


def positional_score(rope: torch.Tensor, query: int, content: torch.Tensor) -> torch.Tensor:
    """Score of one query against every key when q and k carry the same content: only position differs."""
    q = apply_rope(content.expand(rope.shape[0], 1, -1), rope)
    return (q[query] * q).sum(-1)[:, 0]


def test_an_oblique_frequency_follows_a_moving_point_that_axis_bands_cannot():
    # video grid t=8, h=6, w=1 and a point moving one row every two frames: h = 2 + (t - 2) / 2
    coords = video_coords((8, 6, 1))
    t, h = coords[:, 0], coords[:, 1]
    query = int(((t == 2) & (h == 2)).nonzero())
    on_path = (h - 2) == (t - 2) / 2
    # head_dim 16: 2 bands per axis, pairs (t0, t1, h0, h1, w0, w1); content on the h pairs and their partners
    content = torch.zeros(16)
    content[[2, 3, 8, 9]] = 1.0
    oblique = ElementWiseFourierEmbed(16, temperature=100.0, frequencies="learned")
    with torch.no_grad():
        oblique.frequencies[0, 2:4, 0] = -0.5 * oblique.frequencies[0, 2:4, 1]  # f = band * (-1/2, 1, 0)
    score = positional_score(oblique(coords)[:, 0], query, content)
    assert torch.allclose(score[on_path], score.max())  # peaks all along the moving point's path
    assert score[~on_path].max() < score.max() - 0.1

    # axis bands: the score is a sum of per-axis terms whatever q and k hold, so softmax attention factors into
    # a(t) * b(h): every frame gets the same distribution over rows, and no content can make it follow the path
    fixed = ElementWiseFourierEmbed(16, temperature=100.0)
    random_content = torch.randn(16, generator=torch.Generator().manual_seed(0))
    weights = positional_score(fixed(coords), query, random_content).softmax(0).view(8, 6)
    per_frame = weights / weights.sum(1, keepdim=True)
    torch.testing.assert_close(per_frame, per_frame[:1].expand(8, 6))


def test_frequencies_train_without_weight_decay_and_round_trip(tiny_config, make_pack):
    cfg = tiny_config(rope_frequencies="learned_rotated")
    model = _init(cfg, seed=3)
    packed, _ = make_pack(cfg, SHAPES)
    model(**packed.model_inputs()).square().sum().backward()
    freq = model.adapter.rope.frequencies
    assert freq.shape == (cfg.num_heads_kv, 3 * cfg.rope_bands, 3) and freq.grad.abs().sum() > 0
    assert no_weight_decay("adapter.rope.frequencies", freq, cfg)
    fresh = DiTModel(cfg)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(fresh.adapter.rope.frequencies, freq)


def test_unknown_frequency_mode_is_refused(tiny_config):
    with pytest.raises(ValueError, match="rope_frequencies must be one of"):
        tiny_config(rope_frequencies="mixed")
    with pytest.raises(ValueError, match="rope frequencies must be one of"):
        ElementWiseFourierEmbed(16, frequencies="mixed")
