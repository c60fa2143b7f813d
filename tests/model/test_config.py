"""Config, presets, the released state_dict layout (spec section 2) and ``horse model-info``."""

from math import prod

import pytest
import torch

from horse.cli import main as horse_main
from horse.model import PRESETS, DiTConfig, DiTModel
from horse.model.config import get_config

RELEASED = dict(num_layers=40, hidden_size=5120, head_dim=128, num_kv_heads=8, mm_layers=(0, 1, 2, 3, 36, 37, 38, 39),
                gelu7_layers=(0, 1, 2, 3), post_norm_layers=(), video_in=192, audio_in=64, text_in=3584)


def spec_shapes(num_layers, hidden_size, head_dim, num_kv_heads, mm_layers, gelu7_layers, post_norm_layers,
                video_in, audio_in, text_in) -> dict[str, tuple[int, ...]]:
    """The state_dict layout written from the spec's section 2 tables and formulas (no horse code involved)."""
    D, d = hidden_size, head_dim
    heads_q = D // d
    qkv = heads_q * d + 2 * num_kv_heads * d + heads_q  # q | k | v | one gate per query head
    gelu_inner = 4 * D
    swiglu_inner = (D * 4 * 2 // 3) // 4 * 4
    shapes = {}
    for i in range(num_layers):
        m = 3 if i in mm_layers else 1
        up, inner = (gelu_inner, gelu_inner) if i in gelu7_layers else (2 * swiglu_inner, swiglu_inner)
        p = f"block.layers.{i}."
        shapes.update({
            p + "attention.pre_norm.weight": (D * m,),
            p + "attention.linear_qkv.weight": (qkv * m, D),
            p + "attention.linear_proj.weight": (D * m, D),
            p + "attention.q_norm.weight": (d * m,),
            p + "attention.k_norm.weight": (d * m,),
            p + "mlp.pre_norm.weight": (D * m,),
            p + "mlp.up_gate_proj.weight": (up * m, D),
            p + "mlp.down_proj.weight": (D * m, inner),
        })
        if i in post_norm_layers:
            shapes[p + "attn_post_norm.weight"] = (D * m,)
            shapes[p + "mlp_post_norm.weight"] = (D * m,)
    for name, cin in (("video", video_in), ("text", text_in), ("audio", audio_in)):
        shapes[f"adapter.{name}_embedder.weight"] = (D, cin)
        shapes[f"adapter.{name}_embedder.bias"] = (D,)
    shapes["adapter.rope.bands"] = (d // 8,)
    shapes["final_norm_video.weight"] = (D,)
    shapes["final_norm_audio.weight"] = (D,)
    shapes["final_linear_video.weight"] = (video_in, D)
    shapes["final_linear_audio.weight"] = (audio_in, D)
    return shapes


def spec_shapes_of(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    return spec_shapes(cfg.num_layers, cfg.hidden_size, cfg.head_dim, cfg.num_query_groups, cfg.mm_layers,
                       cfg.gelu7_layers, cfg.post_norm_layers, cfg.video_in_channels, cfg.audio_in_channels,
                       cfg.text_in_channels)


def meta_model(preset) -> DiTModel:
    with torch.device("meta"):
        return DiTModel(preset)


def test_generator_reproduces_the_spec_literals():
    s = spec_shapes(**RELEASED)
    assert s["block.layers.4.attention.linear_qkv.weight"] == (7208, 5120)
    assert s["block.layers.4.mlp.up_gate_proj.weight"] == (27304, 5120)
    assert s["block.layers.4.mlp.down_proj.weight"] == (5120, 13652)
    for i in (0, 3):
        assert s[f"block.layers.{i}.attention.linear_qkv.weight"] == (21624, 5120)
        assert s[f"block.layers.{i}.attention.linear_proj.weight"] == (15360, 5120)
        assert s[f"block.layers.{i}.mlp.up_gate_proj.weight"] == (61440, 5120)
        assert s[f"block.layers.{i}.mlp.down_proj.weight"] == (15360, 20480)
        assert s[f"block.layers.{i}.attention.q_norm.weight"] == (384,)
    assert s["block.layers.39.mlp.up_gate_proj.weight"] == (81912, 5120)
    assert s["block.layers.39.mlp.down_proj.weight"] == (15360, 13652)
    assert len(s) == 331
    assert sum(prod(v) for k, v in s.items() if k != "adapter.rope.bands") == 15_299_419_136


def test_released_model_parameter_count_and_layout():
    model = meta_model("magihuman-15b")
    assert sum(p.numel() for p in model.parameters()) == 15_299_419_136
    sd = model.state_dict()
    assert len(sd) == 331
    assert len(list(model.parameters())) == 330
    assert {k: tuple(v.shape) for k, v in sd.items()} == spec_shapes(**RELEASED)


@pytest.mark.parametrize("overrides", [
    dict(post_norm_layers=(1, 2)),
    dict(mm_layers=(), gelu7_layers=(1,)),
], ids=["post-norm", "no-experts"])
def test_variant_layouts_follow_the_spec(tiny_config, overrides):
    cfg = tiny_config(**overrides)
    sd = DiTModel(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == spec_shapes_of(cfg)


def test_sr1080_preset_local_layers():
    cfg = PRESETS["magihuman-15b-sr1080"]
    full = {3, 7, 11, 15, 19, 23, 27, 31}
    assert cfg.local_attn_layers == tuple(i for i in range(40) if i not in full)
    assert len(cfg.local_attn_layers) == 32
    assert cfg.replace(local_attn_layers=()) == PRESETS["magihuman-15b"]


def test_small_and_demo_presets_are_the_documented_sizes():
    demo, small = PRESETS["demo"], PRESETS["small"]
    assert (demo.num_layers, demo.hidden_size, demo.head_dim, demo.num_heads_q, demo.num_heads_kv) == (6, 192, 32, 6, 2)
    assert (demo.video_in_channels, demo.audio_in_channels, demo.text_in_channels) == (192, 64, 128)
    assert (small.num_layers, small.hidden_size, small.head_dim, small.num_heads_q) == (12, 768, 64, 12)
    # sandwich: experts in the first and last layers (two each for small, one each for demo), gelu7 first
    assert small.mm_layers == (0, 1, 10, 11) and small.gelu7_layers == (0, 1)
    assert demo.mm_layers == (0, 5) and demo.gelu7_layers == (0,)
    for cfg in (demo, small):
        model = meta_model(cfg)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == spec_shapes_of(cfg)


OFFICIAL_DUMP = {  # every field of the official ModelConfig after its validators (inference/common/config.py)
    "num_layers": 40, "hidden_size": 5120, "head_dim": 128, "num_query_groups": 8, "video_in_channels": 192,
    "audio_in_channels": 64, "text_in_channels": 3584, "checkpoint_qk_layernorm_rope": False,
    "params_dtype": "torch.float32", "tread_config": {"selection_rate": 0.5, "start_layer_idx": 2, "end_layer_idx": 25},
    "mm_layers": [0, 1, 2, 3, 36, 37, 38, 39], "local_attn_layers": [], "enable_attn_gating": True,
    "activation_type": "swiglu7", "gelu7_layers": [0, 1, 2, 3], "num_heads_q": 40, "num_heads_kv": 8,
    "post_norm_layers": [],
}


def test_from_dict_official_names_with_ignored_fields():
    d = {"num_layers": 6, "hidden_size": 256, "head_dim": 32, "num_query_groups": 2, "mm_layers": [0, 5],
         "gelu7_layers": [0], "post_norm_layers": [2], "local_attn_layers": [3], "video_in_channels": 192,
         "audio_in_channels": 64, "text_in_channels": 128, "enable_attn_gating": True,
         "params_dtype": "torch.float32", "checkpoint_qk_layernorm_rope": False,
         "tread_config": {"selection_rate": 0.5}, "num_heads_q": 8}
    cfg = DiTConfig.from_dict(d)
    assert cfg == DiTConfig(num_layers=6, hidden_size=256, head_dim=32, num_query_groups=2, mm_layers=(0, 5),
                            gelu7_layers=(0,), post_norm_layers=(2,), local_attn_layers=(3,), text_in_channels=128)
    assert get_config(d) == cfg
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_accepts_the_full_official_model_config():
    # activation_type is an official field; its value "swiglu7" is the default the gelu7_layers override.
    assert DiTConfig.from_dict(OFFICIAL_DUMP) == PRESETS["magihuman-15b"]


def test_from_dict_rejects_a_typo_and_inconsistent_heads():
    with pytest.raises(ValueError, match="num_layer"):
        DiTConfig.from_dict({"num_layer": 4})
    with pytest.raises(ValueError, match="num_heads_q"):
        DiTConfig.from_dict({"hidden_size": 256, "head_dim": 32, "num_heads_q": 4})
    with pytest.raises(ValueError):
        get_config("no-such-preset")


def test_config_validation_errors():
    with pytest.raises(ValueError, match="mm_layers"):
        DiTConfig(num_layers=4, mm_layers=(4,), gelu7_layers=())
    with pytest.raises(ValueError, match="head_dim"):
        DiTConfig(hidden_size=100, head_dim=12)
    with pytest.raises(ValueError, match="video_prediction must be one of"):
        DiTConfig(video_prediction="epsilon")
    with pytest.raises(ValueError, match="sample_prediction_min_sigma"):
        DiTConfig(sample_prediction_min_sigma=0.0)


def test_model_info_keys_output(capsys):
    assert horse_main(["model-info", "--preset", "magihuman-15b", "--keys"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    expected = [f"{k}\t{','.join(map(str, v))}" for k, v in sorted(spec_shapes(**RELEASED).items())]
    assert lines == expected
    assert "block.layers.0.attention.linear_qkv.weight\t21624,5120" in lines


def test_model_info_count_line(capsys):
    assert horse_main(["model-info", "--preset", "magihuman-15b"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 15,299,419,136 (15.299B); state_dict entries: 331" in out.splitlines()
    assert horse_main(["model-info", "--preset", "nonexistent"]) == 2
