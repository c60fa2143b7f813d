import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import horse.checkpoint.save as save_module
from horse.checkpoint import (
    INDEX_FILE_NAME,
    load_state_dict_folder,
    read_checkpoint_keys,
    resolve_checkpoint_files,
    save_state_dict_folder,
)
from horse.checkpoint.safetensors_io import iter_file_tensors

# A 16-wide TinyNet holds 632 bytes (largest tensor 256); 200-byte shards force at least 3 files.
SMALL_SHARD_BYTES = 200

LAYOUTS = {
    "single": dict(),
    "sharded": dict(max_shard_bytes=SMALL_SHARD_BYTES),
    "sharded_zst": dict(max_shard_bytes=SMALL_SHARD_BYTES, compress_zstd=True),
    "single_zst": dict(compress_zstd=True),
}


def _assert_same(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for k in expected:
        assert actual[k].dtype == expected[k].dtype, k
        assert torch.equal(actual[k], expected[k]), k


@pytest.mark.parametrize("layout", LAYOUTS)
def test_roundtrip_files_and_values(tmp_path, make_state_dict, layout):
    sd = make_state_dict()
    folder = save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False, metadata={"step": "7"}, **LAYOUTS[layout])
    names = sorted(p.name for p in folder.iterdir())
    zst = layout.endswith("zst")
    if layout.startswith("single"):
        assert names == ["model.safetensors" + (".zst" if zst else "")]
    else:
        index = json.loads((folder / INDEX_FILE_NAME).read_text())
        shards = sorted(set(index["weight_map"].values()))
        n = len(shards)
        assert n >= 3
        assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        assert names == sorted([INDEX_FILE_NAME] + [s + (".zst" if zst else "") for s in shards])
        assert index["metadata"] == {"total_size": sum(t.numel() * t.element_size() for t in sd.values()), "step": "7"}
        assert set(index["weight_map"]) == set(sd)

    files = resolve_checkpoint_files(folder)
    loaded = {}
    for f in files.shards:
        loaded.update(iter_file_tensors(f))
    _assert_same(loaded, sd)
    assert read_checkpoint_keys(folder) == {k: (tuple(t.shape), t.dtype) for k, t in sd.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_into_meta_module_keeps_module_dtypes(tmp_path, make_state_dict, make_tiny_net, layout):
    sd = make_state_dict(dtype=torch.float32)  # an fp32 checkpoint (like `distill`) into a bf16-linear module
    save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False, **LAYOUTS[layout])
    model = make_tiny_net(meta=True)
    report = load_state_dict_folder(model, tmp_path / "ckpt")

    assert report.ok and sorted(report.loaded_keys) == sorted(sd)
    msd = model.state_dict()
    assert msd["proj.weight"].dtype == torch.bfloat16
    assert torch.equal(msd["proj.weight"], sd["proj.weight"].to(torch.bfloat16))
    for k in ["norm_weight", "head.weight", "head.bias", "frozen", "bands"]:
        assert msd[k].dtype == torch.float32 and torch.equal(msd[k], sd[k]), k
    assert msd["step"].dtype == torch.int64 and torch.equal(msd["step"], sd["step"])
    assert all(not t.is_meta and t.device.type == "cpu" for t in msd.values())
    # Parameter-ness and requires_grad survive the assignment.
    assert isinstance(model.proj.weight, torch.nn.Parameter) and model.proj.weight.requires_grad
    assert isinstance(model.frozen, torch.nn.Parameter) and not model.frozen.requires_grad
    assert not isinstance(model.bands, torch.nn.Parameter) and "bands" in dict(model.named_buffers())
    assert model.scratch.is_meta  # non-persistent buffers are the module's business


def test_dtype_override_upcasts_floats_only(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()  # bf16 linear on disk, like `base`
    save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False, max_shard_bytes=SMALL_SHARD_BYTES)
    model = make_tiny_net(meta=True)
    load_state_dict_folder(model, tmp_path / "ckpt", dtype=torch.float32)
    assert model.proj.weight.dtype == torch.float32
    assert torch.equal(model.proj.weight, sd["proj.weight"].float())
    assert model.step.dtype == torch.int64 and torch.equal(model.step, sd["step"])
    assert isinstance(model.proj.weight, torch.nn.Parameter) and model.proj.weight.requires_grad


def test_load_into_materialized_module_copies_in_place(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False, compress_zstd=True)
    model = make_tiny_net()
    before = {k: p for k, p in model.named_parameters()}
    load_state_dict_folder(model, tmp_path / "ckpt")
    for k, p in model.named_parameters():
        assert p is before[k], f"{k} was replaced; optimizers holding it would go stale"
    _assert_same(model.state_dict(), sd)


def test_load_single_file_path(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    save_file(sd, tmp_path / "weights.safetensors")
    model = make_tiny_net(meta=True)
    load_state_dict_folder(model, tmp_path / "weights.safetensors")
    _assert_same(model.state_dict(), sd)


def test_zst_shards_from_foreign_writer(tmp_path, make_state_dict, make_tiny_net):
    """An official-style folder: index + shards written by safetensors, compressed by a plain zstd stream
    without a recorded content size (as `zstd` piped output would be)."""
    import zstandard

    sd = make_state_dict()
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[:3], "model-00002-of-00002.safetensors": keys[3:]}
    for name, ks in halves.items():
        raw = tmp_path / name
        save_file({k: sd[k] for k in ks}, raw)
        with open(raw, "rb") as fin, open(tmp_path / (name + ".zst"), "wb") as fout:
            zstandard.ZstdCompressor(write_content_size=False).copy_stream(fin, fout)
        raw.unlink()
    (tmp_path / INDEX_FILE_NAME).write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in halves.items() for k in ks}}))
    model = make_tiny_net(meta=True)
    load_state_dict_folder(model, tmp_path)
    _assert_same(model.state_dict(), sd)


def test_shared_and_noncontiguous_tensors_are_saved(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = {"a": base, "tied": base, "row": base[1], "t": base.T}
    save_state_dict_folder(sd, tmp_path / "ckpt", fsync=False)
    with safe_open(tmp_path / "ckpt" / "model.safetensors", framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    _assert_same(got, {k: v.contiguous() for k, v in sd.items()})


def test_greedy_splitter_matches_hand_plan(monkeypatch):
    # 4-byte floats: sizes 100, 100, 100, 40, 200 bytes with a 240-byte limit.
    tensors = {n: torch.zeros(k) for n, k in [("a", 25), ("b", 25), ("c", 25), ("d", 10), ("e", 50)]}
    monkeypatch.setattr(save_module, "_hf_splitter", lambda: None)
    plan = save_module.plan_shards(tensors, 240)
    assert plan == {
        "model-00001-of-00003.safetensors": ["a", "b"],
        "model-00002-of-00003.safetensors": ["c", "d"],
        "model-00003-of-00003.safetensors": ["e"],
    }
    assert save_module.plan_shards(tensors, 10_000) == {"model.safetensors": list(tensors)}


def test_bad_metadata_and_meta_tensors_rejected(tmp_path):
    with pytest.raises(ValueError, match="str to str"):
        save_state_dict_folder({"a": torch.zeros(2)}, tmp_path / "x", metadata={"step": 3})
    with pytest.raises(ValueError, match="meta device"):
        save_state_dict_folder({"a": torch.zeros(2, device="meta")}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_hf_splitter_used_when_available_and_agrees_on_simple_case():
    pytest.importorskip("huggingface_hub")
    tensors = {n: torch.zeros(25) for n in "abcd"}  # 100 bytes each
    assert save_module._hf_splitter() is not None
    assert save_module.plan_shards(tensors, 200) == {
        "model-00001-of-00002.safetensors": ["a", "b"],
        "model-00002-of-00002.safetensors": ["c", "d"],
    }
