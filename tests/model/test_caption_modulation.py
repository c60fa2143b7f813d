"""DiTConfig.caption_modulation: adaLN of every layer's inputs from the sample's mean caption embedding."""

import pytest
import torch

from horse.model import DiTModel
from horse.model.dit import TokenRouting
from horse.model.config import TEXT
from horse.model.init import init_weights
from horse.model.layers import ModalityGroups

SHAPES = [dict(frames=3, h=4, w=4, audio=5, text=3), dict(frames=2, h=2, w=4, audio=3, text=4)]


def _init(cfg, seed=0):
    return init_weights(DiTModel(cfg), torch.Generator().manual_seed(seed))


def _switch_on(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.block.layers:
            layer.caption_modulation.weight.copy_(torch.randn(layer.caption_modulation.weight.shape, generator=g))
    return model


def test_starts_as_the_release_and_adds_only_its_keys(tiny_config, make_pack):
    release, modulated = _init(tiny_config()), _init(tiny_config(caption_modulation=True))
    extra = set(modulated.state_dict()) - set(release.state_dict())
    layers = tiny_config().num_layers
    assert extra == {"adapter.caption_embedder.weight", "adapter.caption_embedder.bias"} | {
        f"block.layers.{i}.caption_modulation.{p}" for i in range(layers) for p in ("weight", "bias")}
    assert not any(layer.caption_modulation.weight.any() or layer.caption_modulation.bias.any()
                   for layer in modulated.block.layers)
    state = modulated.state_dict()
    modulated.load_state_dict({**state, **release.state_dict()})
    packed, _ = make_pack(tiny_config(), SHAPES)
    with torch.no_grad():
        torch.testing.assert_close(modulated(**packed.model_inputs()), release(**packed.model_inputs()),
                                   rtol=0, atol=0)


def _pooled(model, inputs):
    seqlens = inputs["cu_seqlens"].diff().tolist()
    h = model.adapter(inputs["x"], ModalityGroups(inputs["modality"]), inputs["coords"])
    return model.adapter.caption(h, inputs["modality"], seqlens)[0]


def test_each_sample_is_modulated_by_its_own_caption(tiny_config, make_pack):
    cfg = tiny_config(caption_modulation=True)
    model = _switch_on(_init(cfg))
    inputs = make_pack(cfg, SHAPES)[0].model_inputs()
    first = int(inputs["cu_seqlens"][1])
    text = torch.nonzero(inputs["modality"] == TEXT).flatten()
    second_text = text[text >= first]
    changed = dict(inputs, x=inputs["x"].clone())
    changed["x"][second_text] += 1.0
    reordered = dict(inputs, x=inputs["x"].clone())
    reordered["x"][second_text] = inputs["x"][second_text.flip(0)]
    with torch.no_grad():
        base, out = model(**inputs), model(**changed)
        torch.testing.assert_close(out[:first], base[:first], rtol=0, atol=0)  # the other sample is untouched
        assert (out[first:] - base[first:]).abs().max() > 1e-3
        # the mean caption only: the same text tokens in another order give the same caption embedding
        torch.testing.assert_close(_pooled(model, reordered), _pooled(model, inputs))


def test_a_sample_without_text_gets_a_finite_output(tiny_config, make_pack):
    cfg = tiny_config(caption_modulation=True)
    model = _switch_on(_init(cfg))
    packed, _ = make_pack(cfg, [dict(frames=2, h=2, w=2, audio=3, text=0), SHAPES[0]])
    with torch.no_grad():
        assert torch.isfinite(model(**packed.model_inputs())).all()


@pytest.mark.parametrize("routed", [False, True])
def test_learns_from_zero_init(tiny_config, make_pack, routed):
    cfg = tiny_config(caption_modulation=True)
    model = _init(cfg)
    packed, _ = make_pack(cfg, SHAPES)
    inputs = packed.model_inputs()
    routing = None
    if routed:  # TREAD: the skipped tokens' samples must follow them out and back in
        keep = torch.arange(inputs["modality"].numel()) % 2 == 0
        routing = TokenRouting(1, 2, keep)
    model(**inputs, routing=routing).square().mean().backward()
    for layer in model.block.layers:
        assert layer.caption_modulation.weight.grad.abs().sum() > 0
    # zero-initialised modulation: the embedder's gradient arrives once the modulation is non-zero
    assert model.adapter.caption_embedder.weight.grad is not None
