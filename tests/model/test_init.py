"""init_weights: N(0, 1/fan_in) linears, residual writers further scaled by 1/sqrt(2L), zero norms and biases."""

import math

import torch

from horse.model import DiTModel
from horse.model.init import init_weights

RESIDUAL_WRITERS = (".attention.linear_proj.weight", ".mlp.down_proj.weight", "final_linear_video.weight",
                    "final_linear_audio.weight")


def _initialised(seed=0, preset="demo"):
    model = DiTModel(preset)
    with torch.no_grad():  # start from garbage so a skipped parameter shows
        for p in model.parameters():
            p.fill_(0.123)
    return init_weights(model, torch.Generator().manual_seed(seed))


def test_init_statistics():
    model = _initialised()
    L = model.config.num_layers
    checked = 0
    for name, p in model.named_parameters():
        if "norm" in name or name.endswith(".bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
            continue
        fan_in = p.shape[1]
        expected = fan_in ** -0.5 / (math.sqrt(2 * L) if name.endswith(RESIDUAL_WRITERS) else 1.0)
        n = p.numel()
        # sampling error of a std estimate is ~ 1/sqrt(2n) relative: allow 5 of those
        assert abs(p.std().item() / expected - 1) < 5 / math.sqrt(2 * n), (name, p.std().item(), expected)
        assert abs(p.mean().item()) < 5 * expected / math.sqrt(n), name
        checked += 1
    assert checked == 4 * L + 3 + 2  # 4 block linears per layer, 3 embedders, 2 heads


def test_init_is_seeded():
    a, b, c = _initialised(0), _initialised(0), _initialised(1)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if pa.dim() == 2:
            assert not torch.equal(pa, pc), name


def test_fresh_model_output_is_order_one(make_pack):
    model = _initialised()
    cfg = model.config
    packed, _ = make_pack(cfg, [dict(frames=2, h=4, w=4, audio=9, text=6)])
    result = model(**packed.model_inputs(), return_intermediates=True)
    out = result.out
    assert torch.isfinite(out).all()
    rows = packed.modality < 2
    # unit-rms final norm into a head of std D^-1/2 / sqrt(2L): outputs have std ~ 1/sqrt(2L) = 0.25
    std = out[rows].std().item()
    assert 0.1 < std < 1.0, std
    assert torch.equal(out[~rows], torch.zeros_like(out[~rows]))  # text rows
    # the residual stream stays O(1) through depth
    first = result.adapter.pow(2).mean().sqrt()
    for h in result.hidden_states:
        assert 0.5 < (h.pow(2).mean().sqrt() / first).item() < 2
