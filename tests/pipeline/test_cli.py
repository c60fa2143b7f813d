import json
import shutil

import av
import pytest

from horse.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_checkpoint_writes_a_loadable_demo_folder(tmp_path, capsys):
    code, out, _ = _run(capsys, "init-checkpoint", "--preset", "demo", "-o", str(tmp_path / "demo"), "--seed", "3")
    assert code == 0 and "wrote demo checkpoint" in out
    config = json.loads((tmp_path / "demo/config.json").read_text())
    assert config["format_version"] == 1 and config["model"] == "demo" and config["native_fps"] == 8
    assert config["resolutions"] == {"32p": [32, 32]} and config["fps_options"] == [8, 24, 30]
    assert config["motion_template"] == "motion score: {score:.1f}" and config["model_card"]["init_seed"] == 3
    assert (tmp_path / "demo/model.safetensors").stat().st_size > 1_000_000  # 8 layers of width 256
    code, _, err = _run(capsys, "init-checkpoint", "-o", str(tmp_path / "demo"))
    assert code == 2 and err.count("\n") == 1 and "already exists" in err


def test_generate_writes_the_mp4_and_reports_the_seed(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code, stdout, _ = _run(capsys, "generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "a red circle",
                           "--duration", "1", "--fps", "24", "--steps", "2", "--guidance", "3", "-o", str(out),
                           "--metadata", str(tmp_path / "meta.json"), "--audio-after-video")
    assert code == 0 and "seed " in stdout
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["guidance"]["video"] == meta["guidance"]["audio"] == 3.0 and meta["steps"] == 2
    assert meta["audio_after_video"] is True
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"] and c.streams.video[0].average_rate == 24


def _unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_text("this is not an image")
    return path


@pytest.mark.parametrize("case, extra, message", [
    ("empty prompt", ["--prompt", ""], "prompt is empty"),
    ("unreadable image", ["--image", "{broken}"], "cannot read image"),
    ("missing image", ["--image", "{tmp}/nope.png"], "image"),
    ("duration", ["--duration", "10"], "duration 10.0 s is outside what this checkpoint supports (1.0..4.0 s)"),
    ("fps", ["--fps", "25"], "fps 25 is not offered by this checkpoint; choose one of [8, 24, 30]"),
    ("motion", ["--motion-strength", "3"], "motion_strength must be within [0, 1]"),
])
def test_bad_inputs_give_one_error_line(tiny_checkpoint, tmp_path, capsys, case, extra, message):
    broken = _unreadable_image(tmp_path)
    extra = [e.format(broken=broken, tmp=tmp_path) for e in extra]
    argv = ["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", "a circle", "--steps", "1",
            "-o", str(tmp_path / "x.mp4"), *extra]
    code, _, err = _run(capsys, *argv)
    assert code == 2, case
    assert err.count("\n") == 1 and err.startswith("horse generate: error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("remove, message", [
    (None, "not found"),
    ("config.json", "config.json is missing"),
    ("model.safetensors", "model.safetensors"),
])
def test_missing_checkpoint_files_give_one_error_line(tiny_checkpoint, tmp_path, capsys, remove, message):
    folder = tmp_path / "ck"
    if remove is not None:
        shutil.copytree(tiny_checkpoint, folder)
        (folder / remove).unlink()
    code, _, err = _run(capsys, "generate", "--checkpoint", str(folder), "--prompt", "a circle",
                        "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_mismatched_weights_give_one_error_line(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    code, _, err = _run(capsys, "generate", "--checkpoint", str(folder), "--prompt", "a", "-o", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and "does not match the model" in err, err
