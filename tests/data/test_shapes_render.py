"""shapes-AV rendering against independent formulas (no MP4 involved)."""

import math

import numpy as np
import pytest

from horse.data.shapes import ShapesConfig, make_clip, render_clip, sample_params
from horse.data.shapes.render import axis_track, bounce_audio, motion_score, rasterise

CONFIG = ShapesConfig()


def simulate(start, velocity, extent, num_frames, substeps=2000):
    """Brute-force small-step billiard: positions at whole frames and the (sub-step) wall-contact times."""
    x, v, dt = start, velocity, 1.0 / substeps
    positions, contacts = [x], []
    for step in range(1, (num_frames - 1) * substeps + 1):
        x += v * dt
        if x < 0 or x > extent:
            wall = 0.0 if x < 0 else extent
            contacts.append((step - 1) * dt + abs(wall - (x - v * dt)) / abs(v))
            x, v = 2 * wall - x, -v
        if step % substeps == 0:
            positions.append(x)
    return np.array(positions), contacts


@pytest.mark.parametrize("start,velocity,extent", [(3.0, 4.7, 24.0), (10.5, -3.3, 18.0), (0.2, 1.6, 24.0),
                                                   (17.9, 5.0, 18.0), (5.0, 0.0, 24.0)])
def test_axis_track_matches_small_step_simulation(start, velocity, extent):
    positions, contacts = axis_track(start, velocity, extent, 16)
    sim_positions, sim_contacts = simulate(start, velocity, extent, 16)
    np.testing.assert_allclose(positions, sim_positions, atol=1e-6)
    np.testing.assert_allclose([t for t, _ in contacts], sim_contacts, atol=1e-3)


def test_bounce_frame_is_the_frame_closest_to_the_wall():
    for index in range(40):
        _, _, truth = make_clip(CONFIG, 11, "train", index)
        boxes = np.array(truth["boxes_xyxy"])
        for bounce in truth["bounces"]:
            k = bounce["frame"]
            assert k == round(bounce["contact_time_frames"])
            gap = {"left": boxes[:, 0], "top": boxes[:, 1],
                   "right": CONFIG.width - boxes[:, 2], "bottom": CONFIG.height - boxes[:, 3]}[bounce["wall"]]
            assert gap[k] == pytest.approx(gap[max(k - 1, 0): k + 2].min(), abs=1e-3)
            assert gap[k] < truth["speed_px_per_frame"] / 2 + 1e-3  # nearest frame is at most half a step away


@pytest.mark.parametrize("supersample", [4, 16])
@pytest.mark.parametrize("shape,area_fraction", [("square", 1.0), ("circle", math.pi / 4), ("triangle", 0.5)])
def test_rasterised_area_and_centroid(shape, area_fraction, supersample):
    config = ShapesConfig(supersample=supersample)
    side = 14.0
    boxes = np.array([[5.3, 7.6, 5.3 + side, 7.6 + side]])
    frames = rasterise(config, shape, side, boxes, (255, 255, 255), (0, 0, 0))
    alpha = frames[0, :, :, 0] / 255.0
    assert alpha.sum() == pytest.approx(area_fraction * side**2, rel=0.02)
    ys, xs = np.mgrid[: config.height, : config.width] + 0.5
    expected_cy = 7.6 + (2 * side / 3 if shape == "triangle" else side / 2)
    tolerance = 0.5 / supersample + 0.01  # sub-pixel samples quantise edges to 1/supersample px
    assert (alpha * xs).sum() / alpha.sum() == pytest.approx(5.3 + side / 2, abs=tolerance)
    assert (alpha * ys).sum() / alpha.sum() == pytest.approx(expected_cy, abs=tolerance)


def test_bounce_audio_onsets_and_pitch():
    audio = bounce_audio(CONFIG, [0, 5, 6, 15], 500.0)[0]
    sr = CONFIG.sample_rate
    assert audio.shape == (2 * sr,)
    for frame in (5, 6, 15):
        onset = frame * sr // CONFIG.fps
        assert np.abs(audio[onset - 20: onset]).max() < 1e-3 * (frame != 6) + 0.02 * (frame == 6)
        assert np.abs(audio[onset + 40: onset + 200]).max() > 0.45
    tone = audio[5 * sr // 8: 5 * sr // 8 + 2000]
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone)), n=1 << 16))
    assert np.fft.rfftfreq(1 << 16, 1 / sr)[spectrum.argmax()] == pytest.approx(500.0, rel=0.005)
    silent = audio[2 * sr // 8: 5 * sr // 8 - 10]
    assert np.abs(silent).max() == 0


def test_motion_score_formula():
    params = sample_params(CONFIG, 0, "train", 0)
    # Slow, rightwards, from near the left wall: 0.5 + 15 steps of 1.5 px = 23 px < 24 px range, no bounce.
    params.update(direction="right", speed="slowly", speed_px_per_frame=1.5, size="small", size_px=8.0,
                  start_xy=[0.5, 10.0])
    _, audio, truth = render_clip(CONFIG, params)
    assert truth["bounce_frames"] == [] and np.abs(audio).max() == 0
    assert truth["mean_speed_px_per_frame"] == pytest.approx(1.5)
    assert truth["motion_score"] == round(1.5 / CONFIG.motion_score_max_speed, 1) == 0.3
    centres = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # 5 px per frame
    assert motion_score(centres, 10.0) == 0.5 and motion_score(centres, 2.0) == 1.0


def test_fast_clips_score_higher_and_bounce_more():
    scores, bounces = {"slowly": [], "quickly": []}, {"slowly": [], "quickly": []}
    for index in range(60):
        _, _, truth = make_clip(CONFIG, 3, "train", index)
        scores[truth["speed"]].append(truth["motion_score"])
        bounces[truth["speed"]].append(len(truth["bounce_frames"]))
    assert max(scores["slowly"]) < min(scores["quickly"])
    assert all(0.0 <= s <= 1.0 for s in scores["slowly"] + scores["quickly"])
    assert np.mean(bounces["quickly"]) >= 2.5 and 0.8 <= np.mean(bounces["slowly"]) <= 2.5


def test_make_clip_is_deterministic_and_seed_dependent():
    a_frames, a_audio, a_truth = make_clip(CONFIG, 42, "val", 3)
    b_frames, b_audio, b_truth = make_clip(CONFIG, 42, "val", 3)
    assert np.array_equal(a_frames, b_frames) and np.array_equal(a_audio, b_audio) and a_truth == b_truth
    c_frames, _, c_truth = make_clip(CONFIG, 43, "val", 3)
    assert not np.array_equal(a_frames, c_frames) and c_truth != a_truth


@pytest.mark.parametrize("spread", [0.0, 0.2, 1.0])
def test_start_position_spread(spread):
    config = ShapesConfig(start_spread=spread)
    offsets = []  # start relative to the middle of the free extent, in units of half that extent
    for index in range(60):
        params = sample_params(config, 5, "train", index)
        half = (config.width - params["size_px"]) / 2  # square frame: same free extent on both axes
        offsets += [(coordinate - half) / half for coordinate in params["start_xy"]]
    assert np.abs(offsets).max() <= spread + 1e-9
    assert np.ptp(offsets) > 1.6 * spread if spread else not np.any(offsets)


def test_config_validation():
    with pytest.raises(ValueError, match="start_spread"):
        ShapesConfig(start_spread=1.5)
    with pytest.raises(ValueError, match="smaller than the frame"):
        ShapesConfig(height=8, width=8)
    with pytest.raises(ValueError, match="held-out"):
        ShapesConfig(held_out=(("purple", "circle"),))
    with pytest.raises(ValueError, match="Nyquist"):
        ShapesConfig(sample_rate=8000, pitches={"circle": ("low", 300.0), "square": ("medium", 500.0),
                                                "triangle": ("high", 4000.0)})
    assert ShapesConfig.from_dict(CONFIG.to_dict()) == CONFIG
