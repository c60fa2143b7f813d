import json

import pytest
import torch

from horse.checkpoint_folder import CheckpointConfig, load_checkpoint_folder, read_config, save_checkpoint_folder
from horse.model import PRESETS, DiTModel
from horse.pipeline import demo_checkpoint_config

TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}


def _tiny_state_dict(seed=0):
    torch.manual_seed(seed)
    return DiTModel(demo_checkpoint_config(TINY_MODEL).dit_config()).state_dict()


def test_save_load_roundtrip_is_exact_fp32(tmp_path):
    config = demo_checkpoint_config(TINY_MODEL, negative_prompt="blurry", model_card={"steps": 3})
    sd = _tiny_state_dict()
    save_checkpoint_folder(tmp_path / "ck", config, sd)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    loaded_config, model = load_checkpoint_folder(tmp_path / "ck")
    assert loaded_config == config
    assert model.config.num_layers == 2 and model.precision.name == "fp32"
    got = model.state_dict()
    assert got.keys() == sd.keys()
    for k in sd:
        assert got[k].dtype == torch.float32 and torch.equal(got[k], sd[k].float()), k


def test_save_refuses_existing_folder_unless_overwrite(tmp_path):
    config = demo_checkpoint_config(TINY_MODEL)
    save_checkpoint_folder(tmp_path / "ck", config, _tiny_state_dict(0))
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint_folder(tmp_path / "ck", config, _tiny_state_dict(1))
    sd1 = _tiny_state_dict(1)
    save_checkpoint_folder(tmp_path / "ck", config, sd1, overwrite=True)
    _, model = load_checkpoint_folder(tmp_path / "ck")
    assert torch.equal(model.state_dict()["final_linear_video.weight"], sd1["final_linear_video.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary folders left behind


def test_weights_that_do_not_match_the_config_are_rejected(tmp_path):
    save_checkpoint_folder(tmp_path / "ck", demo_checkpoint_config(TINY_MODEL), _tiny_state_dict())
    cfg = json.loads((tmp_path / "ck/config.json").read_text())
    cfg["model"] = {**TINY_MODEL, "num_layers": 3}
    (tmp_path / "ck/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match the model"):
        load_checkpoint_folder(tmp_path / "ck")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_config(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        read_config(tmp_path / "empty")
    save_checkpoint_folder(tmp_path / "ck", demo_checkpoint_config(TINY_MODEL), _tiny_state_dict())
    (tmp_path / "ck/model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint_folder(tmp_path / "ck")


@pytest.mark.parametrize("change, message", [
    ({"format_version": 2}, "format_version"),
    ({"colour": "red"}, "unknown fields \\['colour'\\]"),
    ({"precision": "fp8"}, "precision"),
    ({"video_frame_correlation": 1.0}, "video_frame_correlation"),
    ({"default_resolution": "1080p"}, "default_resolution"),
    ({"resolutions": {"32p": [32, -1]}}, "resolution '32p'"),
    ({"durations": [3, 1]}, "durations"),
    ({"fps_options": []}, "fps_options"),
    ({"sampler": {"name": "ddpm"}}, "sampler name"),
    ({"sampler": {"stepz": 3}}, "unknown sampler fields"),
    ({"codecs": {"video": {"type": "demo"}, "audio": {"type": "demo"}}}, "codecs"),
    ({"codecs": {"video": {"type": "wan2.2"}, "audio": {"type": "demo"}, "text": {"type": "demo"}}}, "needs a 'path'"),
    ({"model": "huge"}, "unknown model preset"),
    ({"motion_template": "motion {speed}"}, "motion_template"),
])
def test_config_validation_names_the_field(change, message):
    data = {**demo_checkpoint_config().to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        CheckpointConfig.from_dict(data, source="cfg.json")


def test_required_fields_and_json_errors(tmp_path):
    with pytest.raises(ValueError, match="missing required fields \\['codecs'\\]"):
        CheckpointConfig.from_dict({"format_version": 1, "model": "demo"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config(tmp_path)


def test_model_field_forms():
    assert demo_checkpoint_config("demo").dit_config() == PRESETS["demo"]
    assert demo_checkpoint_config(TINY_MODEL).dit_config().mm_layers == (0, 1)
    official = DiTModel("demo").config.to_dict()
    assert demo_checkpoint_config(official).dit_config() == DiTModel("demo").config


def test_motion_phrase():
    config = demo_checkpoint_config(motion_template="motion score: {score:.1f}", motion_score_range=[0.0, 10.0])
    assert config.motion_phrase(0.0) == "motion score: 0.0"
    assert config.motion_phrase(0.25) == "motion score: 2.5"
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        config.motion_phrase(1.5)
    with pytest.raises(ValueError, match="declares no motion_template"):
        demo_checkpoint_config(motion_template=None).motion_phrase(0.5)
