import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import horse.checkpoint.save as save_module
from horse.checkpoint import (
    INDEX_FILE_NAME,
    CheckpointMismatchError,
    load_state_dict_folder,
    read_checkpoint_keys,
    save_state_dict_folder,
)


def _save(sd, path, **kw):
    return save_state_dict_folder(sd, path, fsync=False, **kw)


def test_missing_unexpected_and_shape_mismatch_are_listed(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    del sd["head.bias"]
    sd["extra.weight"] = torch.zeros(2, 3)
    sd["proj.weight"] = torch.zeros(16, 9, dtype=torch.bfloat16)
    _save(sd, tmp_path / "ckpt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_folder(make_tiny_net(meta=True), tmp_path / "ckpt")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "1 missing, 1 unexpected, 1 shape-mismatched" in msg
    assert "head.bias  model (4,) torch.float32" in msg
    assert "extra.weight  checkpoint (2, 3) torch.float32" in msg
    assert "proj.weight  checkpoint (16, 9) vs model (16, 8)" in msg


def test_strict_check_happens_before_any_data_is_loaded(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    del sd["frozen"]
    _save(sd, tmp_path / "ckpt")
    model = make_tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="frozen"):
        load_state_dict_folder(model, tmp_path / "ckpt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was modified by a load that failed the key check"


def test_long_key_lists_are_truncated_with_count(tmp_path):
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(30)])  # 60 keys
    _save({"other": torch.zeros(1)}, tmp_path / "ckpt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_folder(model, tmp_path / "ckpt")
    msg = str(info.value)
    assert "missing from the checkpoint (60)" in msg
    assert "... and 40 more" in msg
    assert msg.count("  model (2") == 20  # 20 listed lines


def test_non_strict_returns_report_and_loads_the_rest(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    del sd["head.bias"]
    sd["extra.weight"] = torch.ones(2)
    sd["norm_weight"] = torch.ones(5)
    _save(sd, tmp_path / "ckpt", max_shard_bytes=200)
    model = make_tiny_net()
    report = load_state_dict_folder(model, tmp_path / "ckpt", strict=False)
    assert report.missing_keys == ["head.bias"]
    assert report.unexpected_keys == ["extra.weight"]
    assert report.mismatched_shapes == [("norm_weight", (5,), (16,))]
    assert not report.ok
    assert torch.equal(model.head.weight, sd["head.weight"])
    assert sorted(report.loaded_keys) == sorted(set(sd) - {"extra.weight", "norm_weight"})


def test_param_left_on_meta_is_an_error(tmp_path, make_state_dict, make_tiny_net):
    sd = make_state_dict()
    del sd["head.bias"]
    _save(sd, tmp_path / "ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"still on the meta device[\s\S]*head\.bias"):
        load_state_dict_folder(make_tiny_net(meta=True), tmp_path / "ckpt", strict=False)


def test_missing_paths_name_the_exact_file(tmp_path, make_state_dict, make_tiny_net):
    model = make_tiny_net(meta=True)
    missing_folder = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing_folder)):
        load_state_dict_folder(model, missing_folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither model\.safetensors.*index\.json"):
        load_state_dict_folder(model, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "w.safetensors")):
        load_state_dict_folder(model, tmp_path / "w.safetensors")

    folder = _save(make_state_dict(), tmp_path / "ckpt", max_shard_bytes=200, compress_zstd=True)
    shard = sorted(folder.glob("*.zst"))[1]
    shard.unlink()
    expected = str(folder / shard.name.removesuffix(".zst"))
    with pytest.raises(FileNotFoundError, match=expected):
        load_state_dict_folder(model, folder)
    with pytest.raises(FileNotFoundError, match=expected):
        read_checkpoint_keys(folder)


def test_index_disagreeing_with_shards(tmp_path, make_state_dict, make_tiny_net):
    folder = _save(make_state_dict(), tmp_path / "ckpt", max_shard_bytes=200)
    index = json.loads((folder / INDEX_FILE_NAME).read_text())
    first, other = sorted(set(index["weight_map"].values()))[:2]
    key = next(k for k, v in index["weight_map"].items() if v == first)
    index["weight_map"][key] = other
    (folder / INDEX_FILE_NAME).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"'{key}': index says {other}"):
        load_state_dict_folder(make_tiny_net(meta=True), folder)


def test_corrupt_files(tmp_path, make_tiny_net):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.safetensors.zst").write_bytes(b"not zstd at all")
    with pytest.raises(ValueError, match="not a valid zstd"):
        load_state_dict_folder(make_tiny_net(meta=True), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / INDEX_FILE_NAME).write_text("{}")
    with pytest.raises(ValueError, match="weight_map"):
        load_state_dict_folder(make_tiny_net(meta=True), tmp_path / "b")


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fail_at", ["second_shard", "compression", "final_rename"])
def test_atomic_save_leaves_old_checkpoint_untouched(tmp_path, monkeypatch, make_state_dict, make_tiny_net, fail_at):
    old = make_state_dict(seed=1)
    _save(old, tmp_path / "ckpt", max_shard_bytes=200)
    old_files = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}

    if fail_at == "second_shard":
        real, calls = save_module.save_file, []

        def flaky_save_file(tensors, filename, metadata=None):
            calls.append(filename)
            if len(calls) % 2 == 0:  # the second shard of each save
                raise OSError("disk full (simulated)")
            return real(tensors, filename, metadata=metadata)
        monkeypatch.setattr(save_module, "save_file", flaky_save_file)
    elif fail_at == "compression":
        def broken_compress(src, level):
            src.with_name(src.name + ".zst").write_bytes(b"partial")
            raise OSError("killed during compression (simulated)")
        monkeypatch.setattr(save_module, "_compress_zst", broken_compress)
    else:
        real_replace = os.replace

        def replace_failing_on_tmp(src, dst):
            if ".tmp-" in str(src):
                raise OSError("rename failed (simulated)")
            return real_replace(src, dst)
        monkeypatch.setattr(save_module.os, "replace", replace_failing_on_tmp)

    new = make_state_dict(seed=2)
    for target, overwrite in [(tmp_path / "ckpt", True), (tmp_path / "fresh", False)]:
        with pytest.raises(OSError, match="simulated"):
            _save(new, target, max_shard_bytes=200, compress_zstd=True, overwrite=overwrite)
    monkeypatch.undo()

    assert _entries(tmp_path) == ["ckpt"]  # no new folder, no temp or backup leftovers
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == old_files
    model = make_tiny_net(meta=True)
    load_state_dict_folder(model, tmp_path / "ckpt")
    assert torch.equal(model.head.weight, old["head.weight"])


def test_overwrite_replaces_and_refuses_by_default(tmp_path, make_state_dict, make_tiny_net):
    _save(make_state_dict(seed=1), tmp_path / "ckpt", max_shard_bytes=200)
    new = make_state_dict(seed=2)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _save(new, tmp_path / "ckpt")
    _save(new, tmp_path / "ckpt", overwrite=True)  # sharded -> single file: no stale shards may remain
    assert _entries(tmp_path / "ckpt") == ["model.safetensors"]
    assert _entries(tmp_path) == ["ckpt"]
    model = make_tiny_net(meta=True)
    load_state_dict_folder(model, tmp_path / "ckpt")
    assert torch.equal(model.head.weight, new["head.weight"])


def test_save_with_fsync(tmp_path, make_state_dict):
    folder = save_state_dict_folder(make_state_dict(), tmp_path / "deep" / "ckpt", compress_zstd=True)
    assert _entries(folder) == ["model.safetensors.zst"]
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)


def test_save_file_path_rejected(tmp_path):
    save_file({"a": torch.zeros(1)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not a folder"):
        _save({"a": torch.zeros(1)}, tmp_path / "w.safetensors", overwrite=True)


def test_overwrite_refuses_folder_with_foreign_files(tmp_path, make_state_dict):
    _save(make_state_dict(), tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"refusing to replace .*notes\.txt"):
        _save(make_state_dict(seed=3), tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"
    assert _entries(tmp_path) == ["out"]
