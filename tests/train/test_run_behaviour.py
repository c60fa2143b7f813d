"""Run behaviour on a tiny model, a few steps each: resume by rerunning, keep-last-N, leftovers of killed
saves, SIGTERM (preemption) saving before exit, non-finite losses skipped then stopping the run, init_from."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).absolute().parents[2]
TINY_MODEL = {"num_layers": 2, "hidden_size": 32, "head_dim": 16, "num_query_groups": 1, "mm_layers": [0],
              "gelu7_layers": [0]}
TINY = [*(f"+model.overrides.{k}={v}" for k, v in TINY_MODEL.items()),
        "data.num_train=8", "data.num_val=2", "data.num_test=1", "data.micro_batch=2", "data.num_workers=0",
        "data.shapes.num_frames=8", "validation.every_n_steps=0", "validation.num_prompts=0",
        "logger.wandb.enabled=false", "trainer.log_every_n_steps=1", "trainer.threads=1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One shapes-AV latent cache for the module (runs of the same data share it)."""
    path = tmp_path_factory.mktemp("horse-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HORSE_CACHE", str(path))
        mp.setenv("WANDB_MODE", "offline")
        yield path


def tiny_cfg(root: Path, *overrides: str, name: str = "run"):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"output_root={root}", f"name={name}", *overrides])


def train(root, *overrides, name="run"):
    from train.app import run
    return run(tiny_cfg(root, *overrides, name=name))


def complete_steps(run_dir: Path) -> list[int]:
    from train.checkpointing import complete_checkpoints
    return [s for s, _ in complete_checkpoints(run_dir)]


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "losses.jsonl").read_text().splitlines()]


def test_rerun_resumes_and_continues_the_step_count(cache, tmp_path):
    assert train(tmp_path, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=2")["steps"] == 2
    run_dir = tmp_path / "run"
    first = logged_steps(run_dir)
    summary = train(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2")
    assert summary["steps"] == 4 and complete_steps(run_dir) == [2, 4]
    steps = logged_steps(run_dir)
    assert len(steps) == 4 and steps[:2] == first and steps == sorted(set(steps))  # no step trained twice
    state = torch.load(run_dir / "checkpoints/step-4/state.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    # the same command once more: already at max_steps, it resumes and trains nothing
    assert train(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2")["steps"] == 4
    assert logged_steps(run_dir) == steps
    # resume=never starts over in the same folder
    assert train(tmp_path, "trainer.max_steps=1", "resume=never")["steps"] == 1


def test_keep_last_prunes_old_checkpoints(cache, tmp_path):
    train(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=1", "trainer.keep_last=2")
    assert complete_steps(tmp_path / "run") == [3, 4]


def test_leftovers_of_killed_saves_are_ignored_and_cleaned(cache, tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / ".step-7.tmp").mkdir(parents=True)
    (checkpoints / ".step-7.tmp" / "state.ckpt").write_bytes(b"half a checkpoint")
    (checkpoints / "step-9").mkdir()  # renamed but never marked complete (cannot happen, still must be skipped)
    (checkpoints / "step-9" / "state.ckpt").write_bytes(b"garbage")
    summary = train(tmp_path, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=1")
    assert summary["steps"] == 2  # trained from scratch: neither leftover was loaded
    assert not (checkpoints / ".step-7.tmp").exists()
    assert complete_steps(tmp_path / "run") == [1, 2]


DRIVER = """
import os, runpy, sys, time
delay = float(os.environ.get("TEST_STEP_SLEEP", "0"))
if delay:  # slow each training step so that the signal lands mid-run
    from horse.training import FlowMatchingTask
    compute = FlowMatchingTask.compute
    def slow(self, *args, **kwargs):
        time.sleep(delay)
        return compute(self, *args, **kwargs)
    FlowMatchingTask.compute = slow
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_sigterm_saves_then_the_same_command_resumes(cache, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    command = [sys.executable, str(driver), *TINY, f"output_root={tmp_path}", "name=run", "trainer.max_steps=12",
               "trainer.checkpoint_every_n_steps=1000"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "run"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env={**env, "TEST_STEP_SLEEP": "0.5"}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not ((run_dir / "losses.jsonl").is_file() and len(logged_steps(run_dir)) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        proc.kill()
    assert "received signal" in (tmp_path / "first.log").read_text()
    saved = complete_steps(run_dir)
    assert len(saved) == 1 and 2 <= saved[0] < 12  # only the preemption save (the periodic one is at 1000)
    assert logged_steps(run_dir)[-1] == saved[0]
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = logged_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == 12 and len(steps) == 12
    assert complete_steps(run_dir)[-1] == 12


def _nan_at(monkeypatch, calls: set[int]):
    """Make the training forward's loss terms NaN at the given 0-based training micro-batch calls."""
    from horse.diffusion.loss import LossTerms
    from horse.training import FlowMatchingTask

    original, count = FlowMatchingTask.compute, {"n": 0}

    def compute(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.model.training:
            if count["n"] in calls:
                out.terms = {k: LossTerms(t.sum * float("nan"), t.count) for k, t in out.terms.items()}
            count["n"] += 1
        return out

    monkeypatch.setattr(FlowMatchingTask, "compute", compute)


def test_nonfinite_steps_are_skipped_and_counted(cache, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {1, 2})
    summary = train(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=4", "trainer.max_nonfinite=3")
    assert summary["steps"] == 4 and summary["nonfinite_steps"] == 2  # 6 windows: 4 updates, 2 skipped
    state = torch.load(tmp_path / "run/checkpoints/step-4/state.ckpt", map_location="cpu", weights_only=False)
    assert state["horse"]["nonfinite_steps"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert len(logged_steps(tmp_path / "run")) == 4


def test_repeated_nonfinite_steps_stop_the_run(cache, tmp_path, monkeypatch):
    from train.module import NonFiniteLossError

    _nan_at(monkeypatch, {1, 2, 3})
    with pytest.raises(NonFiniteLossError, match=r"3 steps had a non-finite loss.*trainer\.max_nonfinite"):
        train(tmp_path, "trainer.max_steps=8", "trainer.max_nonfinite=3")


def test_prefix_stages_train_the_first_steps_on_clip_prefixes(cache, tmp_path, monkeypatch):
    from horse.training.task import FlowMatchingTask

    seen, compute = [], FlowMatchingTask.compute

    def recording(self, samples, generator, **kw):
        seen.append({(s["video"].shape[1], s["audio_mean"].shape[0]) for s in samples})
        return compute(self, samples, generator, **kw)

    monkeypatch.setattr(FlowMatchingTask, "compute", recording)
    train(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=4",
          "objective.prefix_stages=[{frames: 2, until_step: 1}, {frames: 4, until_step: 3}]")
    assert seen == [{(2, 9)}, {(4, 17)}, {(4, 17)}, {(8, 33)}]  # 8 latent frames, 4 * 8 + 1 audio tokens


# ---- init_from -----------------------------------------------------------------------------------------------
def _weights(model_fields: dict, seed: int) -> dict:
    from horse.model import DiTModel, get_config
    from horse.model.init import init_weights

    model = DiTModel(get_config("demo", **{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in model_fields.items()}))
    init_weights(model, torch.Generator().manual_seed(seed))
    return model.state_dict()


# the demo config's options outside the release off: an official-layout folder holds the release's keys only
RELEASE_CONDITIONING = ("model.overrides.caption_modulation=false", "model.overrides.video_position_embedding=false")


def _built(tmp_path, init_from):
    from train.app import build_model
    return build_model(tiny_cfg(tmp_path, f"init_from={init_from}", *RELEASE_CONDITIONING)).state_dict()


def test_init_from_a_horse_folder_and_an_official_layout_folder(tmp_path):
    from horse.checkpoint import save_state_dict_folder
    from horse.checkpoint_folder import save_checkpoint_folder
    from horse.pipeline import demo_checkpoint_config

    weights = _weights(TINY_MODEL, seed=123)
    horse_dir = save_checkpoint_folder(tmp_path / "horse", demo_checkpoint_config({"preset": "demo", **TINY_MODEL}),
                                       weights)
    official_dir = save_state_dict_folder(weights, tmp_path / "official")  # DiT weights only, official keys
    assert not (official_dir / "config.json").exists()
    fresh = _weights(TINY_MODEL, seed=0)  # what the run would start from without init_from (seed=0)
    for folder in (horse_dir, official_dir):
        loaded = _built(tmp_path, folder)
        assert loaded.keys() == weights.keys()
        assert all(torch.equal(loaded[k], weights[k]) for k in weights)
        assert not all(torch.equal(loaded[k], fresh[k]) for k in weights)


def test_init_from_a_mismatching_folder_names_the_keys(tmp_path):
    from horse.checkpoint import save_state_dict_folder

    wider = _weights({**TINY_MODEL, "hidden_size": 48}, seed=0)
    save_state_dict_folder(wider, tmp_path / "wider")
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*adapter\.video_embedder\.weight"):
        _built(tmp_path, tmp_path / "wider")
    partial = _weights(TINY_MODEL, seed=0)
    dropped = sorted(partial)[-1]
    del partial[dropped]
    save_state_dict_folder(partial, tmp_path / "partial")
    with pytest.raises(ValueError, match=rf"(?s)missing from the checkpoint.*{dropped.replace('.', '[.]')}"):
        _built(tmp_path, tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _built(tmp_path, tmp_path / "nowhere")
