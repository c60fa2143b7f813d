import json

import pytest
import torch

from eval.suites import SuiteContext
from eval.suites import speed

TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from horse.pipeline import init_checkpoint

    torch.set_num_threads(1)
    return init_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0, model=TINY_MODEL)


def test_stage_meter_times_and_measures_peak_memory():
    meter = speed.StageMeter(torch.device("cpu"))
    with meter.stage("alloc"):
        block = bytearray(64 * 2**20)  # 64 MiB touched -> resident
        block[::4096] = b"x" * len(block[::4096])
    with meter.stage("idle"):
        pass
    assert meter.seconds["alloc"] >= 0 and meter.peak_bytes["alloc"] >= 64 * 2**20
    if meter.peak_reset:  # the per-stage reset worked: the idle stage's peak is below the allocation's
        del block
        with meter.stage("after"):
            pass
        assert meter.peak_bytes["after"] < meter.peak_bytes["alloc"]


def test_speed_suite_end_to_end_with_sr_stage(checkpoint, tmp_path):
    rows = [{"name": "demo", "checkpoint": None, "duration": 1, "sampler": "euler", "steps": 1},
            {"name": "sr", "checkpoint": None, "duration": 1, "sampler": "euler", "steps": 1,
             "sr_checkpoint": str(checkpoint), "sr_steps": 1}]
    cfg = {"suite": {"repeats": 2, "warmup": 0, "rows": rows}}
    result = speed.run(cfg, SuiteContext(checkpoint=checkpoint, out_dir=tmp_path, progress=False))
    table = json.loads((tmp_path / "speed.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["demo", "sr"]
    demo, sr = table["rows"]
    assert demo["median"]["sr"] is None and sr["median"]["sr"] > 0
    for row in (demo, sr):
        assert row["repeats"] == 2 and row["resolution"] == "32x32" and row["peak_mib"] > 0
        for run in row["runs"]:
            stages = [v for v in run["seconds"].values() if v is not None]
            assert run["total"] == pytest.approx(sum(stages))
    md = (tmp_path / "speed.md").read_text()
    assert "| demo | 32x32 | 1.00 |" in md and "| 1080p | 1.600 | 31.000 | 5.800 | 38.400 |" in md
    assert md.splitlines()[4].split("|")[5].strip() == "n/a"  # the demo row's SR cell
    assert result["groups"]["demo"]["n"] == 2 and "sr_s" not in result["groups"]["demo"]["scores"]
    assert result["groups"]["sr"]["scores"]["total_s"]["value"] > 0
    assert all((tmp_path / c["video"]).stat().st_size > 0 for c in result["clips"])


def test_tiny_checkpoint_declares_the_requested_size(tmp_path):
    from horse.checkpoint_folder import load_checkpoint_folder

    path = speed.tiny_checkpoint(tmp_path, [64, 96])
    config, _ = load_checkpoint_folder(path)
    assert config.resolutions == {"64x96": [64, 96]}
