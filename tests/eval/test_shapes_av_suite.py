"""shapes_av end to end at ci size on a tiny random checkpoint: through ``python eval.py`` (Hydra), then a
comparison of two checkpoints through the composed config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from eval.runner import RESULTS_FILE, register_resolvers, run, run_name
from horse.metrics.shapes_av import SCORES

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}
CI_CLIPS = 4
GROUPS = {"in_distribution": 2, "held_out": 2, "all": 4}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from horse.pipeline import init_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpts")
    return [init_checkpoint(root / f"tiny{seed}", seed=seed, model=TINY_MODEL) for seed in (0, 1)]


@pytest.fixture(scope="module")
def first_run(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "tiny0"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "eval.py", "suite=shapes_av", "size=ci", f"checkpoint={checkpoints[0]}",
           f"hydra.run.dir={out}", "threads=1", "progress=false"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_results_json_states_scores_chance_ceiling_and_provenance(first_run, checkpoints):
    results = json.loads((first_run / RESULTS_FILE).read_text())
    assert results["suite"] == "shapes_av" and results["size"] == "ci"
    assert {g: e["n"] for g, e in results["groups"].items()} == GROUPS
    for group in results["groups"].values():
        assert set(group["scores"]) == set(SCORES)
        for name, score in group["scores"].items():
            assert set(score) >= {"value", "ci", "chance", "ceiling", "ceiling_ci", "n", "higher_is_better"}
        for name in ("colour_accuracy", "shape_accuracy", "direction_accuracy", "pitch_accuracy"):
            assert group["scores"][name]["ceiling"] == 1.0  # real clips through the same scorer
        assert group["scores"]["colour_accuracy"]["chance"] == pytest.approx(1 / 8)
        assert 0 < group["scores"]["sync_f1"]["chance"] < group["scores"]["sync_f1"]["ceiling"]
        jitter = group["scores"]["track_jitter_px"]  # chance: the real tracks with their frames shuffled
        assert jitter["ceiling"] < 1.0 < jitter["chance"] and not jitter["higher_is_better"]
    settings = results["settings"]
    from horse.pipeline import demo_checkpoint_config
    defaults = demo_checkpoint_config().sampler  # the suite leaves the sampler and its shift to the checkpoint
    assert settings["sampler"] == {"sampler": defaults.name, "steps": 2, "shift": defaults.shift,
                                   "audio_after_video": False}
    assert settings["mode"] == "t2v"
    assert settings["clips"] == CI_CLIPS
    assert results["config"]["suite"]["name"] == "shapes_av"
    assert len(results["checkpoint"]["sha256"]) == 64 and results["code_version"]["source_sha256"]
    assert results["hardware"]["device"] == "cpu" and results["hardware"]["torch"] == torch.__version__
    clips = results["clips"]
    assert len(clips) == CI_CLIPS and sum(c["held_out"] for c in clips) == 2
    for clip in clips:
        assert (first_run / clip["video"]).stat().st_size > 0 and (first_run / clip["reference"]).is_file()
        assert clip["seed"] == clip["index"]  # generation seed = suite.seed + index
    card = json.loads((checkpoints[0] / "config.json").read_text())["model_card"]["evaluations"]
    assert len(card) == 1 and card[0]["suite"] == "shapes_av"
    assert card[0]["checkpoint_sha256"] == results["checkpoint"]["sha256"]
    assert card[0]["scores"]["all"]["sync_f1"] == results["groups"]["all"]["scores"]["sync_f1"]["value"]


def test_report_references_every_clip_and_score(first_run):
    results = json.loads((first_run / RESULTS_FILE).read_text())
    report = (first_run / "report.html").read_text()
    for clip in results["clips"]:
        assert f'src="{clip["video"]}"' in report and f'src="{clip["reference"]}"' in report
    for name in SCORES:
        assert name in report
    assert report.count("data:image/png;base64,") >= 2  # the score panels and the motion scatter


def test_comparing_a_finished_run_with_a_new_checkpoint(first_run, checkpoints, tmp_path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs" / "eval"), version_base=None):
        cfg = compose("eval", overrides=["suite=shapes_av", "size=ci", f"checkpoints=[{first_run},{checkpoints[1]}]",
                                         "progress=false", "update_model_card=false"])
    report = run(cfg, tmp_path)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["name"] for r in comparison["runs"]] == ["tiny0", "tiny1"]
    groups = comparison["comparisons"][0]["groups"]
    assert set(groups) == set(GROUPS) and set(groups["all"]) == set(SCORES)
    for score in groups["all"].values():
        assert score["n"] <= CI_CLIPS and (score["p_value"] is None or 0 <= score["p_value"] <= 1)
    html = report.read_text()
    for clip in comparison["clips"]:
        assert all(f'src="{v}"' in html and (tmp_path / v).is_file() for v in clip["videos"])
    card = json.loads((checkpoints[1] / "config.json").read_text())["model_card"]
    assert "evaluations" not in card  # update_model_card=false


def test_v2a_mode_adds_sound_to_the_real_clips(checkpoints, tmp_path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs" / "eval"), version_base=None):
        cfg = compose("eval", overrides=["suite=shapes_av", "size=ci", f"checkpoint={checkpoints[0]}",
                                         "suite.mode=v2a", "progress=false", "update_model_card=false"])
    run(cfg, tmp_path)
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results["settings"]["mode"] == "v2a"
    for clip in results["clips"]:  # the picture is the real clip's, so its video scores are the real ones
        for name in ("colour_correct", "direction_correct", "size_correct"):
            assert clip["scores"][name] == clip["reference_scores"][name] == 1.0
    bad = cfg.copy()
    bad.suite.mode = "a2v"
    with pytest.raises(ValueError, match="suite.mode must be one of"):
        run(bad, tmp_path / "bad")


def test_run_names_and_bad_configs(tmp_path):
    assert run_name("/a/b/my-ckpt/", None) == "my-ckpt"
    assert run_name(None, ["/x/a", "/y/b/results.json"]) == "compare-a-vs-b"
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs" / "eval"), version_base=None):
        cfg = compose("eval", overrides=["suite=shapes_av", "size=ci"])
        assert cfg.size.clips == CI_CLIPS and cfg.suite.generate.sampler is None
        with pytest.raises(ValueError, match="no checkpoint given"):
            run(cfg, tmp_path)
        from eval.suites import load_suite

        with pytest.raises(ValueError, match="unknown eval suite"):
            load_suite("no_such_suite")
