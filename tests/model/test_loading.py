"""Official-layout checkpoints (bf16 block linears, fp32 rest) into a meta-built DiTModel as fp32 masters."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from horse.checkpoint import CheckpointMismatchError, load_state_dict_folder, save_state_dict_folder
from horse.model import DiTConfig, DiTModel

REPO_ROOT = Path(__file__).resolve().parents[2]


def official_dtypes(sd: dict) -> dict:
    """As the released files store them: block linears bf16, norms/adapter/heads/bands fp32."""
    return {k: v.to(torch.bfloat16) if k.startswith("block.layers.") and v.dim() == 2 else v.clone()
            for k, v in sd.items()}


def meta_model(cfg) -> DiTModel:
    with torch.device("meta"):
        return DiTModel(cfg)


@pytest.fixture
def official_sd(tiny_config, random_model):
    cfg = tiny_config(post_norm_layers=(1,))
    return cfg, official_dtypes(random_model(cfg, seed=21).state_dict())


@pytest.mark.parametrize("layout", ["single", "sharded", "sharded-zst"])
def test_load_official_layout_exactly(official_sd, tmp_path, layout, make_pack):
    cfg, sd = official_sd
    total = sum(v.numel() * v.element_size() for v in sd.values())
    shard = None if layout == "single" else total // 3
    path = save_state_dict_folder(sd, tmp_path / "ckpt", max_shard_bytes=shard, compress_zstd=layout.endswith("zst"),
                                  fsync=False)
    files = sorted(p.name for p in path.iterdir())
    if layout == "single":
        assert files == ["model.safetensors"]
    else:
        assert "model.safetensors.index.json" in files and len(files) >= 4
        assert all(f.endswith(".zst") for f in files if "-of-" in f) == layout.endswith("zst")
    model = meta_model(cfg)
    report = load_state_dict_folder(model, path, strict=True, dtype=torch.float32)
    assert report.ok and sorted(report.loaded_keys) == sorted(sd)
    loaded = model.state_dict()
    assert list(loaded) == list(sd)
    for k, v in loaded.items():
        assert v.dtype == torch.float32 and v.device.type == "cpu", k
        assert torch.equal(v, sd[k].float()), k
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())
    # the loaded model computes what a model holding the same values computes
    ref = DiTModel(cfg)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    packed, _ = make_pack(cfg, [dict(frames=1, h=2, w=4, audio=3, text=2)])
    assert torch.equal(model(**packed.model_inputs()), ref(**packed.model_inputs()))


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_mismatch_is_an_error_naming_the_key(official_sd, tmp_path, change):
    cfg, sd = official_sd
    key = {"missing": "block.layers.1.mlp.down_proj.weight", "unexpected": "block.layers.7.mlp.extra.weight",
           "shape": "final_linear_audio.weight"}[change]
    if change == "missing":
        del sd[key]
    elif change == "unexpected":
        sd[key] = torch.zeros(2, 2)
    else:
        sd[key] = torch.zeros(cfg.audio_in_channels + 1, cfg.hidden_size)
    path = save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False)
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")) as info:
        load_state_dict_folder(meta_model(cfg), path, strict=True, dtype=torch.float32)
    assert isinstance(info.value, ValueError)


# ---- peak memory --------------------------------------------------------------------------------------------
# 4 layers, hidden 768, experts in layers 0 and 3: 50,976,512 parameters = 204 MB in fp32.
PEAK_CONFIG = dict(num_layers=4, hidden_size=768, head_dim=128, num_query_groups=2, mm_layers=[0, 3],
                   gelu7_layers=[0], text_in_channels=256)
MAX_GROWTH = 1.5  # x the fp32 model; holding the whole checkpoint next to the model would need >= 1.5x

CHILD = textwrap.dedent("""
    import json, sys
    import torch
    from horse.checkpoint import load_state_dict_folder
    from horse.model import DiTModel, get_config
    torch.set_num_threads(1)
    with torch.device("meta"):
        model = DiTModel(get_config(json.loads(sys.argv[2])))
    def peak_rss_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
    try:  # reset the peak to the current RSS (Linux >= 4.0); otherwise the post-import peak is the baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    baseline_kib = peak_rss_kib()
    load_state_dict_folder(model, sys.argv[1], strict=True, dtype=torch.float32)
    peak_kib = peak_rss_kib()
    dtypes = sorted({str(p.dtype) for p in model.state_dict().values()})
    sums = {k: v.double().sum().item() for k, v in model.state_dict().items()}
    print(json.dumps({"growth_bytes": (peak_kib - baseline_kib) * 1024, "sums": sums, "dtypes": dtypes}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_meta_load_of_a_sharded_bf16_checkpoint_peak_rss(tmp_path):
    cfg = DiTConfig.from_dict(PEAK_CONFIG)
    model = meta_model(cfg)
    model_bytes = sum(p.numel() for p in model.parameters()) * 4
    assert 190e6 < model_bytes < 220e6
    g = torch.Generator().manual_seed(0)
    sd = official_dtypes({k: torch.randn(v.shape, generator=g) * 0.02 for k, v in model.state_dict().items()})
    expected = {k: v.double().sum().item() for k, v in sd.items()}
    total = sum(v.numel() * v.element_size() for v in sd.values())
    save_state_dict_folder(sd, tmp_path / "ckpt", max_shard_bytes=total // 5, fsync=False)
    del sd
    assert len(list((tmp_path / "ckpt").glob("model-*-of-*.safetensors"))) >= 4

    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "ckpt"), json.dumps(PEAK_CONFIG)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dtypes"] == ["torch.float32"]
    assert result["sums"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    growth = result["growth_bytes"] / model_bytes
    assert growth > 0.9, f"RSS grew only {growth:.2f}x the model: the measurement is not seeing the loaded weights"
    assert growth < MAX_GROWTH, f"loading used {growth:.2f}x the fp32 model size in RAM (limit {MAX_GROWTH}x)"
