"""Loaders: committed key lists against the modules they describe, clear errors, and checked round trips."""

import json

import pytest
import torch
from safetensors.torch import save_file

from horse.metrics.loaders import (KeyListMismatch, check_shapes, hf_key_list, load_checked_state_dict,
                                   load_key_list, make_key_list, read_weight_shapes)
from tests.metrics.conftest import TINY_CLIP, TINY_WHISPER


def _meta_key_list(module_class, **kwargs):
    with torch.device("meta"):
        module = module_class(**kwargs)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name, module_path", [
    ("i3d_400", "horse.metrics.fvd:InceptionI3d"),
    ("vggish", "horse.metrics.fad:VGGish"),
    ("syncnet_v2", "horse.metrics.sync:SyncNet"),
])
def test_committed_key_lists_match_the_modules(name, module_path):
    import importlib

    module_name, cls = module_path.split(":")
    assert load_key_list(name).tensors == _meta_key_list(getattr(importlib.import_module(module_name), cls))


def test_vggish_parameter_count_by_hand():
    convs = [(1, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    linears = [(512 * 6 * 4, 4096), (4096, 4096), (4096, 128)]
    expected = sum(i * o * 9 + o for i, o in convs) + sum(i * o + o for i, o in linears)
    assert sum(torch.Size(s).numel() for s in load_key_list("vggish").tensors.values()) == expected


@pytest.mark.parametrize("name, classes", [
    ("clip-vit-large-patch14", ("CLIPModel", "CLIPConfig")),
    ("whisper-large-v3", ("WhisperForConditionalGeneration", "WhisperConfig")),
])
def test_committed_hf_key_lists_match_transformers(name, classes):
    import transformers

    keys = load_key_list(name)
    derived = hf_key_list(*(getattr(transformers, c) for c in classes), keys.config, model="", repeat_prefixes=())
    assert keys.tensors == {k: tuple(v) for k, v in derived["tensors"].items()}


def test_i3d_vggish_syncnet_key_names_follow_the_public_layouts():
    i3d, vggish, sync = (load_key_list(n).tensors for n in ("i3d_400", "vggish", "syncnet_v2"))
    assert i3d["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7) and i3d["logits.conv3d.bias"] == (400,)
    assert i3d["Mixed_5c.b1b.conv3d.weight"] == (384, 192, 3, 3, 3) and "Mixed_4f.b3b.bn.running_var" in i3d
    assert vggish["embeddings.0.weight"] == (4096, 512 * 4 * 6) and vggish["features.13.weight"] == (512, 512, 3, 3)
    assert sync["netcnnaud.0.weight"] == (64, 1, 3, 3) and sync["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert sync["netfclip.3.weight"] == (1024, 512)


def test_missing_file_names_the_path(tmp_path):
    from horse.metrics.clip_score import load_clip
    from horse.metrics.fvd import load_i3d

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pt")):
        load_i3d(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_clip(tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="committed lists"):
        load_key_list("no-such-model")


def test_mismatch_lists_missing_unexpected_and_wrong_shapes():
    keys = load_key_list({"model": "toy", "tensors": {"a.weight": [2, 3], "b.{n}.w": [4]}, "repeats": {"b": 2},
                          "optional": ["^opt$"], "ignored": ["^junk\\."]})
    assert set(keys.tensors) == {"a.weight", "b.0.w", "b.1.w"}
    check_shapes({"a.weight": (2, 3), "b.0.w": (4,), "b.1.w": (4,), "junk.x": (1,)}, keys)  # ignored extra is fine
    with pytest.raises(KeyListMismatch) as err:
        check_shapes({"a.weight": (3, 2), "b.0.w": (4,), "extra": (1,)}, keys)
    text = str(err.value)
    assert "1 missing: b.1.w" in text and "1 unexpected: extra" in text
    assert "a.weight: found [3, 2], expected [2, 3]" in text


def test_make_key_list_compresses_identical_blocks_and_refuses_different_ones():
    sd = {"x.0.w": torch.zeros(2), "x.1.w": torch.zeros(2), "y": torch.zeros(3)}
    kl = make_key_list(sd, model="toy", repeat_prefixes=["x"])
    assert kl["repeats"] == {"x": 2} and kl["tensors"] == {"x.{n}.w": [2], "y": [3]}
    assert load_key_list(kl).tensors == {"x.0.w": (2,), "x.1.w": (2,), "y": (3,)}
    with pytest.raises(ValueError, match="not identical"):
        make_key_list({"x.0.w": torch.zeros(2), "x.1.w": torch.zeros(3)}, model="toy", repeat_prefixes=["x"])


def test_i3d_round_trip_through_a_checked_file(tmp_path):
    from horse.metrics.fvd import InceptionI3d, load_i3d

    torch.manual_seed(0)
    model = InceptionI3d()
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if "num_batches" not in k}  # DataParallel prefix
    torch.save(sd, tmp_path / "i3d.pt")
    loaded = load_i3d(tmp_path / "i3d.pt")
    assert torch.equal(loaded.Mixed_5c.b2b.conv3d.weight, model.Mixed_5c.b2b.conv3d.weight)
    assert not loaded.training
    bad = dict(sd)
    bad["module.logits.conv3d.bias"] = torch.zeros(600)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(KeyListMismatch, match="logits.conv3d.bias: found \\[600\\], expected \\[400\\]"):
        load_i3d(tmp_path / "bad.pt")


def test_syncnet_checkpoint_with_release_prefix_loads(tmp_path):
    from horse.metrics.sync import SyncNet, load_syncnet

    sd = {f"__S__.{k}": v for k, v in SyncNet().state_dict().items()}
    save_file(sd, str(tmp_path / "syncnet.safetensors"))
    assert read_weight_shapes(tmp_path / "syncnet.safetensors")["__S__.netfcaud.0.weight"] == (512, 512)
    assert isinstance(load_syncnet(tmp_path / "syncnet.safetensors"), SyncNet)


def test_non_state_dict_pickle_is_refused(tmp_path):
    torch.save({"a": torch.zeros(1), "note": "text"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="state dict of tensors"):
        load_checked_state_dict(tmp_path / "x.pt", {"tensors": {"a": [1]}}, "toy")


def test_hf_folder_checks_config_and_keys(tiny_clip_dir, tiny_whisper_dir, tmp_path):
    from transformers import CLIPConfig, CLIPModel, WhisperConfig, WhisperForConditionalGeneration

    from horse.metrics.asr import load_whisper
    from horse.metrics.clip_score import load_clip

    clip_keys = hf_key_list(CLIPModel, CLIPConfig, TINY_CLIP, model="tiny clip")
    model, tokenizer = load_clip(tiny_clip_dir, key_list=clip_keys)
    assert model.config.projection_dim == 8 and tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    with pytest.raises(KeyListMismatch, match="projection_dim=8 \\(expected 768\\)"):
        load_clip(tiny_clip_dir)  # the committed ViT-L/14 list
    wrong = dict(clip_keys, config={})
    wrong["tensors"] = {**clip_keys["tensors"], "text_projection.weight": [9, 16]}
    with pytest.raises(KeyListMismatch, match="text_projection.weight"):
        load_clip(tiny_clip_dir, key_list=wrong)
    whisper_keys = hf_key_list(WhisperForConditionalGeneration, WhisperConfig, TINY_WHISPER, model="tiny whisper",
                               optional=["^proj_out\\.weight$"])
    model, processor = load_whisper(tiny_whisper_dir, key_list=whisper_keys)
    assert model.config.d_model == 16 and processor.feature_extractor.feature_size == 16
    json.dumps(whisper_keys)  # serialisable as committed lists are
