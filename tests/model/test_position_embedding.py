"""DiTConfig.video_position_embedding: absolute (t, h, w) features of video tokens, zero at init."""

import torch

from horse.model import DiTModel
from horse.model.init import init_weights

SHAPES = [dict(frames=3, h=4, w=4, audio=5, text=3), dict(frames=2, h=2, w=4, audio=3, text=4)]


def _init(cfg, seed=0):
    return init_weights(DiTModel(cfg), torch.Generator().manual_seed(seed))


def test_starts_as_the_release_and_adds_one_key(tiny_config, make_pack):
    release, positioned = _init(tiny_config()), _init(tiny_config(video_position_embedding=True))
    extra = set(positioned.state_dict()) - set(release.state_dict())
    assert extra == {"adapter.video_position.weight"} and not positioned.adapter.video_position.weight.any()
    positioned.load_state_dict({**release.state_dict(), "adapter.video_position.weight":
                                positioned.adapter.video_position.weight.detach()})
    packed, _ = make_pack(tiny_config(), SHAPES)
    with torch.no_grad():
        torch.testing.assert_close(positioned(**packed.model_inputs()), release(**packed.model_inputs()),
                                   rtol=0, atol=0)


def test_tells_video_tokens_where_and_when_they_are(tiny_config, make_pack):
    cfg = tiny_config(video_position_embedding=True)
    model = _init(cfg)
    packed, _ = make_pack(cfg, SHAPES[:1])
    inputs = packed.model_inputs()
    inputs["x"] = torch.zeros_like(inputs["x"])  # identical content everywhere: only position can differ
    with torch.no_grad():
        release_rows = model(**inputs)[inputs["modality"] == 0]
        model.adapter.video_position.weight.normal_()
        rows = model(**inputs)[inputs["modality"] == 0]
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 1e-4  # every (t, h, w) gets its own output
    assert torch.cdist(release_rows, release_rows).max() < 1e-4  # RoPE alone cannot tell them apart here


def test_learns(tiny_config, make_pack):
    cfg = tiny_config(video_position_embedding=True)
    model = _init(cfg)
    packed, _ = make_pack(cfg, SHAPES)
    model(**packed.model_inputs()).square().mean().backward()
    assert model.adapter.video_position.weight.grad.abs().sum() > 0
