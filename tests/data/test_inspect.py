"""`horse data inspect` statistics and contact sheet; `horse data cache` through the CLI; decode windows."""

import json

import numpy as np
import pytest
from PIL import Image

from horse.cli import main as horse_main
from horse.data.av_io import encode_mp4
from horse.data.decode import ClipConfig, choose_size, decode_clip, resize_crop
from horse.data.inspect import SHEET_TILE, inspect_dataset
from horse.data.shards import write_shards

FPS, SR = 8, 2048


def _sample(i, frames, h, w, audio=True):
    video = np.zeros((frames, h, w, 3), np.uint8)
    video[..., 0] = (np.arange(frames) * 20)[:, None, None]  # red channel encodes the frame index
    wave = (0.3 * np.sin(np.arange(frames * SR // FPS) * 0.2)).astype(np.float32)[None] if audio else None
    return {"__key__": f"c{i}", "mp4": encode_mp4(video, wave, FPS, SR if audio else None),
            "json": {"caption": f"clip number {i}"}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    samples = [_sample(0, 16, 32, 32), _sample(1, 12, 24, 48), _sample(2, 8, 32, 32, audio=False),
               {"__key__": "broken", "mp4": b"nope", "json": {"caption": "x"}}]
    write_shards(samples, root, max_count=2)
    return root


def test_report_counts_durations_resolutions_buckets_and_sheet(dataset, tmp_path):
    cfg = ClipConfig(fps=FPS, frame_counts=(16, 8), sizes=((32, 32), (16, 32)))
    report = inspect_dataset(dataset, cfg, sheet_path=tmp_path / "sheet.png", sheet_frames=3)
    assert (report["kind"], report["shards"], report["samples"], report["bad"]) == ("mp4", 2, 4, 1)
    assert report["no_audio"] == 1 and report["empty_caption"] == 0
    assert report["duration_s"]["total"] == pytest.approx((16 + 12 + 8) / FPS)
    assert report["duration_s"]["max"] == pytest.approx(2.0)
    assert report["resolutions"] == {"32x32": 2, "24x48": 1}
    assert report["buckets"] == {"16x32x32": 1, "8x16x32": 1, "8x32x32": 1}
    sheet = Image.open(report["contact_sheet"])
    assert sheet.size[1] == 3 * (SHEET_TILE + 2)  # one row per readable sample


def test_cli_inspect_and_cache(dataset, tmp_path, capsys):
    assert horse_main(["data", "inspect", str(dataset), "--json", str(tmp_path / "r.json")]) == 0
    assert "4 samples in 2 shards" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 4
    args = ["data", "cache", "--codec", "demo", "--in", str(dataset), "--out", str(tmp_path / "c"),
            "--frames", "8", "--size", "32x32"]
    assert horse_main(args) == 0
    assert "cached 2 samples" in capsys.readouterr().out  # the silent and the broken clip are skipped
    assert horse_main(args) == 0 and "up to date" in capsys.readouterr().out
    assert horse_main(args[:-1] + ["16x16"]) == 2  # stale: a clear error, not a traceback
    assert "clip.sizes" in capsys.readouterr().err
    assert horse_main(["data", "inspect", str(tmp_path / "missing")]) == 2
    report = inspect_dataset(tmp_path / "c")
    assert report["kind"] == "latent cache" and report["buckets"] == {"8x32x32": 2}


def test_decode_window_resize_and_audio(dataset):
    raw = _sample(5, 16, 24, 48)
    cfg = ClipConfig(fps=4, frame_counts=(4,), sizes=((16, 16),), window="start", sample_rate=SR)
    clip = decode_clip(raw, cfg)
    # 4 fps from 8 fps source, window at 0: source frames 0, 2, 4, 6 (red = 20 * index)
    assert clip.frames.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(clip.frames[:, 8, 8, 0], [0, 40, 80, 120], atol=4)
    assert clip.audio.shape == (1, SR)  # 4 frames / 4 fps = 1 s
    centre = decode_clip(raw, ClipConfig(fps=4, frame_counts=(4,), sizes=((16, 16),), window="center"))
    assert centre.start == pytest.approx(0.5)  # (2 s - 1 s) / 2
    a = decode_clip(raw, ClipConfig(fps=4, frame_counts=(4,), sizes=((16, 16),), window="random", seed=1))
    b = decode_clip(raw, ClipConfig(fps=4, frame_counts=(4,), sizes=((16, 16),), window="random", seed=1))
    assert a.start == b.start and 0 <= a.start <= 1.0  # deterministic per key and seed
    assert choose_size(720, 1280, [(64, 64), (48, 80), (80, 48)]) == (48, 80)
    frames = np.zeros((1, 10, 20, 3), np.uint8)
    frames[:, :, 5:15] = 255  # white band in the middle half: survives the centre crop to a square
    out = resize_crop(frames, 8, 8)
    assert out.shape == (1, 8, 8, 3) and out[0, 4, 1:7].min() > 240
