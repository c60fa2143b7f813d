"""Gradient flow: exactly the text-expert rows of a multi-expert last layer get no gradient, every other row does;
activation checkpointing changes nothing but memory."""

import copy

import pytest
import torch

import horse.model.layers as layers
from horse.model import DiTModel
from horse.model.checkpointing import apply_activation_checkpointing, remove_activation_checkpointing
from horse.model.init import no_weight_decay, zero_gradient_rows

CONFIGS = {
    # experts first and last, a post-norm layer in the middle, gating on
    "mm-last": dict(num_layers=4, mm_layers=(0, 3), gelu7_layers=(0,), post_norm_layers=(1,)),
    # the last layer is gelu7, multi-expert and post-norm
    "mm-last-gelu-postnorm": dict(num_layers=3, mm_layers=(0, 2), gelu7_layers=(2,), post_norm_layers=(2,)),
    "mm-last-no-gating": dict(num_layers=3, mm_layers=(0, 2), gelu7_layers=(0,), enable_attn_gating=False),
    # the last layer has one shared expert: text reaches video/audio through it, so no exceptions at all
    "shared-last": dict(num_layers=3, mm_layers=(0,), gelu7_layers=(0,), post_norm_layers=(2,)),
}
SHAPES = [dict(frames=2, h=4, w=4, audio=5, text=3), dict(frames=1, h=2, w=4, audio=3, text=4)]


def expected_zero_rows(cfg) -> dict[str, set[int]]:
    """Written from the forward pass: the heads drop text rows, so in a multi-expert last layer nothing the text
    expert computes for text queries reaches an output; text keys and values still do (video/audio read them)."""
    last = cfg.num_layers - 1
    if last not in cfg.mm_layers:
        return {}
    D, d, hq, hkv = cfg.hidden_size, cfg.head_dim, cfg.num_heads_q, cfg.num_heads_kv
    width = (hq + 2 * hkv) * d + (hq if cfg.enable_attn_gating else 0)
    inner = 4 * D if last in cfg.gelu7_layers else 2 * ((D * 8 // 3) // 4 * 4)

    def text_chunk(size):
        return set(range(2 * size, 3 * size))
    qkv = set(range(2 * width, 2 * width + hq * d)) | set(range(2 * width + (hq + 2 * hkv) * d, 3 * width))
    p = f"block.layers.{last}."
    rows = {p + "attention.linear_qkv.weight": qkv, p + "attention.q_norm.weight": text_chunk(d),
            p + "attention.linear_proj.weight": text_chunk(D), p + "mlp.pre_norm.weight": text_chunk(D),
            p + "mlp.up_gate_proj.weight": text_chunk(inner), p + "mlp.down_proj.weight": text_chunk(D)}
    if last in cfg.post_norm_layers:
        rows[p + "attn_post_norm.weight"] = text_chunk(D)
        rows[p + "mlp_post_norm.weight"] = text_chunk(D)
    return rows


def listed_rows(cfg) -> dict[str, set[int]]:
    return {name: {r for s, e in ranges for r in range(s, e)} for name, ranges in zero_gradient_rows(cfg).items()}


def loss_and_grads(model, packed, seed=7):
    model.zero_grad(set_to_none=True)
    out = model(**packed.model_inputs())
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    loss = (out * weights).sum()
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for n, p in model.named_parameters()}
    return loss.detach(), grads


@pytest.mark.parametrize("name", list(CONFIGS))
def test_zero_gradient_rows_are_exactly_the_listed_ones(name, tiny_config, random_model, make_pack):
    cfg = tiny_config(**CONFIGS[name])
    assert listed_rows(cfg) == expected_zero_rows(cfg)
    if name == "shared-last":
        assert zero_gradient_rows(cfg) == {}
    model = random_model(cfg, seed=11)
    packed, _ = make_pack(cfg, SHAPES, seed=12)
    _, grads = loss_and_grads(model, packed)
    listed = listed_rows(cfg)
    wrong = {}
    for pname, grad in grads.items():
        zero = set(torch.nonzero(grad.reshape(grad.shape[0], -1).abs().amax(1) == 0).flatten().tolist())
        if zero != listed.get(pname, set()):
            wrong[pname] = (sorted(zero)[:8], len(zero), len(listed.get(pname, ())))
    assert not wrong, wrong


def _plain_norm_forward(self, x, expert=0):
    j = expert if self.num_experts > 1 else 0
    xf, scale = x.float(), self.weight[j * self.dim:(j + 1) * self.dim].float() + 1
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * scale).to(x.dtype)


def _plain_swiglu7(u):
    g, lin = u[..., 0::2].clamp(max=7.0), u[..., 1::2].clamp(-7.0, 7.0)
    return g * torch.sigmoid(1.702 * g) * (lin + 1)


def _plain_gelu7(u):
    g = u.clamp(max=7.0)
    return g * torch.sigmoid(1.702 * g)


def test_model_gradients_equal_plain_autograd(tiny_config, random_model, make_pack, rel_err, monkeypatch):
    """The hand-written backwards (norm, activations) inside the model agree with autograd of plain formulas."""
    cfg = tiny_config(**CONFIGS["mm-last"])
    model = random_model(cfg, seed=15)
    packed, _ = make_pack(cfg, SHAPES, seed=16)
    loss, grads = loss_and_grads(model, packed)
    monkeypatch.setattr(layers.MultiModalityRMSNorm, "forward", _plain_norm_forward)
    monkeypatch.setitem(layers.ACTIVATION_FNS, "swiglu7", _plain_swiglu7)
    monkeypatch.setitem(layers.ACTIVATION_FNS, "gelu7", _plain_gelu7)
    ref_loss, ref_grads = loss_and_grads(model, packed)
    assert rel_err(loss, ref_loss) < 1e-6
    for name, g in ref_grads.items():
        assert rel_err(grads[name], g) < 1e-5, name


def test_no_weight_decay_names(tiny_config):
    cfg = tiny_config(**CONFIGS["mm-last"])
    params = dict(DiTModel(cfg).named_parameters())
    decide = {n: no_weight_decay(n, params[n], cfg) for n in params}
    for name in ("block.layers.0.attention.pre_norm.weight", "block.layers.0.attention.q_norm.weight",
                 "block.layers.1.attn_post_norm.weight", "final_norm_video.weight", "adapter.video_embedder.bias"):
        assert decide[name], name
    for name in ("adapter.video_embedder.weight", "block.layers.3.mlp.up_gate_proj.weight",
                 "block.layers.0.attention.linear_qkv.weight", "final_linear_audio.weight"):
        assert not decide[name], name
    # exactly the vectors are exempt here (no parameter is wholly gradient-free)
    assert {n for n, v in decide.items() if v} == {n for n, p in params.items() if p.dim() == 1}


def test_activation_checkpointing_is_exact(tiny_config, random_model, make_pack):
    cfg = tiny_config(**CONFIGS["mm-last"])
    model = random_model(cfg, seed=13)
    packed, _ = make_pack(cfg, SHAPES, seed=14)
    ref_loss, ref_grads = loss_and_grads(model, packed)
    keys = list(model.state_dict())

    ckpt = copy.deepcopy(model)
    assert apply_activation_checkpointing(ckpt) == list(range(cfg.num_layers))
    assert list(ckpt.state_dict()) == keys
    runs = []
    ckpt.block.layers[1].attention.register_forward_hook(lambda m, a, o: runs.append(1))
    loss, grads = loss_and_grads(ckpt, packed)
    assert len(runs) == 2, "the checkpointed layer should run again in backward"
    assert torch.equal(loss, ref_loss)
    for name, g in ref_grads.items():  # recomputation on CPU is deterministic: bitwise equal
        assert torch.equal(grads[name], g), name

    remove_activation_checkpointing(ckpt)
    runs.clear()
    loss_and_grads(ckpt, packed)
    assert len(runs) == 1
    assert list(ckpt.state_dict()) == keys
