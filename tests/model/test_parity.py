"""Parity with the official daVinci-MagiHuman DiT, from the fixtures it produced (../shared/reference/parity/).

Tolerances are relative to max|reference|: fp32 <= 1e-5, the release's mixed precision <= 5e-3.

Mixed precision is chaotic at the bf16 roundings: a one-ulp fp32 difference
before a bf16 cast can flip a rounding, and the flip then grows through the
layers. On this machine the fp32 GEMM of the fixture's *text embedder* rounds
differently from the machine that produced the fixture (its video and audio
embedders match bit for bit; double precision does not reproduce the fixture's
text rows either), so end-to-end mixed outputs of two of the three cases drift
to ~8e-3 although every layer is exact. The test therefore checks the mixed
policy layer by layer with the official previous-layer state as input
("teacher forced", where horse must be bit-exact up to 1e-6), and end to end
at 5e-3 where the inputs agree bit for bit, else at 1e-2 (bf16 vs fp32 is 1.3%).

Bit-exact bf16 needs the fixture's GEMM kernels: oneDNN's AVX512-BF16 ones (tests/conftest.py keeps AMX out).
A CPU without AVX512-BF16 sums bf16 products in another order (0.2-0.3% per layer, as far as fp32 compute is
from the reference), so there the teacher-forced check is skipped and end to end is held to 2e-2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from horse.model import DiTModel
from horse.model.dit import ForwardContext
from horse.model.layers import ModalityGroups
from horse.model.packing import pack, unpack

PARITY = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "parity"
CASES = [("tiny", "v2"), ("tiny", "v1"), ("tiny_local", "local_v2")]
POLICIES = {"fp32": "fp32", "mixed": "bf16"}
# end-to-end mixed tolerance per case (see the module docstring)
MIXED_END_TO_END = {"v1": 5e-3, "v2": 1e-2, "local_v2": 1e-2}


def _fixture_bf16_kernels() -> bool:
    """Whether this CPU runs the bf16 GEMMs the fixture was made with (AVX512-BF16, see tests/conftest.py)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX512_CORE_BF16"


EXACT_BF16 = _fixture_bf16_kernels()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.fixture(scope="module")
def fixtures():
    if not PARITY.exists():
        pytest.skip(f"parity fixtures not found at {PARITY}")
    out = {}
    for name in ("tiny", "tiny_local"):
        meta = json.loads((PARITY / f"{name}.json").read_text())
        tensors = load_file(str(PARITY / f"{name}.safetensors"))
        out[name] = (meta, tensors)
    return out


def _model(meta, tensors, policy: str) -> DiTModel:
    model = DiTModel(meta["config"], precision=policy)
    state = {k[3:]: v for k, v in tensors.items() if k.startswith("sd/")}
    model.load_state_dict(state, strict=True)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "parameters must be fp32 masters"
    return model


def _local(meta, case):
    c = meta["cases"][case]
    return (c["q_ranges"], c["k_ranges"]) if c.get("local_attention") else None


@pytest.mark.parametrize("name,case", CASES)
def test_packing_reproduces_official_inputs(fixtures, name, case):
    meta, t = fixtures[name]
    c, p = meta["cases"][case], f"case/{case}/"
    sample = {"video": t[p + "video_latent"][0], "audio": t[p + "audio_latent"][0],
              "text": t[p + "text_feat"][0, :c["text_len"]]}
    packed = pack([sample], width=t[p + "x"].shape[1], coords_style=c["coords_style"])
    assert torch.equal(packed.x, t[p + "x"])
    assert torch.equal(packed.coords, t[p + "coords"])
    assert torch.equal(packed.modality, t[p + "modality"])
    for tag in POLICIES.values():
        back = unpack(t[p + f"{tag}/out"], packed, audio_channels=64)[0]
        assert torch.equal(back["video"], t[p + f"{tag}/out_video"][0])
        assert torch.equal(back["audio"], t[p + f"{tag}/out_audio"][0])


@pytest.mark.parametrize("name,case", CASES)
def test_fp32_end_to_end(fixtures, name, case):
    meta, t = fixtures[name]
    p = f"case/{case}/"
    model = _model(meta, t, "fp32")
    with torch.no_grad():
        r = model(t[p + "x"], t[p + "coords"], t[p + "modality"], local_ranges=_local(meta, case),
                  return_intermediates=True)
    assert torch.equal(model.adapter.rope.bands, t["sd/adapter.rope.bands"])
    assert _rel(r.rope, t[p + "fp32/rope"]) <= 1e-6
    assert _rel(r.adapter, t[p + "fp32/h_adapter"]) <= 1e-5
    for i, h in enumerate(r.hidden_states):
        assert _rel(h, t[p + f"fp32/h_layer{i}"]) <= 1e-5, f"layer {i}"
    assert _rel(r.out, t[p + "fp32/out"]) <= 1e-5
    assert r.out.dtype == torch.float32


@pytest.mark.parametrize("name,case", CASES)
def test_mixed_layer_by_layer(fixtures, name, case):
    """Each layer (and the heads), fed the official state before it, reproduces the official state after it."""
    if not EXACT_BF16:
        pytest.skip("bit-exact bf16 needs the fixture's AVX512-BF16 GEMM kernels, which this CPU lacks (or "
                    "ONEDNN_MAX_CPU_ISA selects others); fp32 parity and the end-to-end mixed bound still run")
    meta, t = fixtures[name]
    p = f"case/{case}/bf16/"
    model = _model(meta, t, "mixed")
    x, coords, modality = (t[f"case/{case}/{k}"] for k in ("x", "coords", "modality"))
    groups = ModalityGroups(modality)
    local = model._local_plan(coords, modality, [modality.numel()], _local(meta, case), None)
    ctx = ForwardContext(groups, model.adapter.rope(coords), [modality.numel()], local, model.precision)
    with torch.no_grad():
        assert _rel(model.adapter(x, groups, coords), t[p + "h_adapter"]) <= 1e-5
        h_prev = t[p + "h_adapter"]
        for i, layer in enumerate(model.block.layers):
            assert _rel(layer(h_prev, ctx), t[p + f"h_layer{i}"]) <= 1e-6, f"layer {i}"
            h_prev = t[p + f"h_layer{i}"]
        assert _rel(groups.apply(h_prev, model._head), t[p + "out"]) <= 1e-5
        # the check discriminates: fp32 compute of the same layer is far from the mixed reference
        model.set_precision("fp32")
        ctx.policy = model.precision
        assert _rel(model.block.layers[1](t[p + "h_layer0"], ctx), t[p + "h_layer1"]) > 1e-4


@pytest.mark.parametrize("name,case", CASES)
def test_mixed_end_to_end(fixtures, name, case):
    meta, t = fixtures[name]
    p = f"case/{case}/"
    model = _model(meta, t, "mixed")
    with torch.no_grad():
        out = model(t[p + "x"], t[p + "coords"], t[p + "modality"], local_ranges=_local(meta, case))
    assert _rel(out, t[p + "bf16/out"]) <= (MIXED_END_TO_END[case] if EXACT_BF16 else 2e-2)


def test_local_attention_changes_the_output(fixtures):
    """The local case is not trivially full attention: its contrast output differs and horse reproduces it."""
    meta, t = fixtures["tiny_local"]
    p = "case/local_v2/"
    cfg = dict(meta["config"], local_attn_layers=[])
    model = DiTModel(cfg, precision="fp32")
    model.load_state_dict({k[3:]: v for k, v in t.items() if k.startswith("sd/")})
    with torch.no_grad():
        out = model(t[p + "x"], t[p + "coords"], t[p + "modality"])
    assert _rel(out, t[p + "fp32/out_full_attention"]) <= 1e-5
    assert _rel(out, t[p + "fp32/out"]) > 1e-3
