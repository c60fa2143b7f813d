"""The shapes-AV scorer on real clips (near ceiling), on the renderer's ground truth, and on corrupted clips."""

import math

import numpy as np
import pytest

from horse.data.av_io import decode_mp4, encode_mp4
from horse.data.shapes import ShapesConfig, make_clip, parse_caption, render_clip, sample_params
from horse.data.shapes.render import bounce_audio
from horse.metrics.shapes_av import (SCORES, SHAPE_FILL, detect_onsets, detect_pitch, match_events, score_clip,
                                     track_jitter)
from horse.metrics.stats import summarise_scores

CONFIG = ShapesConfig()
NUM_CLIPS = 8  # through H.264/AAC
NUM_RAW = 48  # straight from the renderer (fast)
LABELS = ("colour", "shape", "size", "direction", "pitch")
SAMPLES_PER_FRAME = CONFIG.sample_rate // CONFIG.fps
AMBIGUOUS_GAP_PX = 0.3  # a wall contact this close to the first/last frame is near the centroid's precision (1/4 px)


def roundtrip(frames, audio, sample_rate=CONFIG.sample_rate):
    clip = decode_mp4(encode_mp4(frames, audio, CONFIG.fps, sample_rate, crf=CONFIG.crf, preset=CONFIG.x264_preset))
    return clip.frames, clip.audio, clip.sample_rate


def score(frames, audio, sample_rate, truth):
    return score_clip(frames, audio, sample_rate, CONFIG.fps, parse_caption(truth["caption"]), CONFIG)


@pytest.fixture(scope="module")
def clips():
    """(params, raw frames, raw audio, truth, decoded MP4 (frames, audio, rate)) of the first test clips."""
    out = []
    for i in range(NUM_CLIPS):
        params = sample_params(CONFIG, 0, "test", i)
        frames, audio, truth = render_clip(CONFIG, params)
        out.append((params, frames, audio, truth, roundtrip(frames, audio)))
    return out


def mean_scores(results):
    return {name: s["value"] for name, s in summarise_scores([r["scores"] for r in results], SCORES).items()}


def test_real_clips_score_at_the_ceiling(clips):
    results = [score(*decoded, truth) for _, _, _, truth, decoded in clips]
    means = mean_scores(results)
    for label in LABELS:
        assert means[f"{label}_accuracy"] == 1.0, label
    assert means["sync_f1"] >= 0.9 and means["sync_precision"] >= 0.9 and means["sync_recall"] >= 0.9
    assert means["count_error"] <= 0.25
    assert means["motion_abs_error"] <= 0.05 and means["motion_correlation"] >= 0.95
    assert means["track_jitter_px"] <= 0.5  # constant velocity between bounces, through H.264
    for result, (_, _, _, truth, _) in zip(results, clips):
        # audio is on the video clock after decoding (AAC priming dropped): onsets within 10 ms of the tones
        np.testing.assert_allclose(result["detected"]["onset_times_s"], truth["tone_onsets_s"], atol=0.010)
        assert abs(result["detected"]["side_px"] - truth["size_px"]) < 0.5
        # the evidence behind the shape call is reported: area / bounding box and the row profile's skewness
        fill, skew = result["detected"]["fill_ratio"], result["detected"]["vertical_skew"]
        asked = parse_caption(truth["caption"])["shape"]
        if asked == "triangle":
            assert fill < 0.7 and skew < -0.4  # apex up: mass low in the box
        else:
            assert fill == pytest.approx(SHAPE_FILL[asked], abs=0.05)
            assert abs(skew) < 0.1


def test_visual_bounces_and_direction_match_the_renderer():
    """Bounce frames from the pixels alone agree with the renderer's contacts (within one frame, one to one).

    A contact within a few tenths of a pixel of the first or last frame is hard to see (the shape just sits at the
    wall): such a clip may read as starting away from the wall (or stopping at it) without that bounce."""
    recalled = total = exact = ambiguous = 0
    for i in range(NUM_RAW):
        frames, audio, truth = make_clip(CONFIG, 3, "test", i)
        result = score(frames, None, None, truth)
        detected = result["detected"]
        speed = np.abs(truth["velocity_px_per_frame"])
        last = CONFIG.num_frames - 1
        edge_gaps_px = [min(b["contact_time_frames"], last - b["contact_time_frames"])
                        * speed[int(b["wall"] in ("top", "bottom"))] for b in truth["bounces"]]
        if min(edge_gaps_px, default=math.inf) < AMBIGUOUS_GAP_PX:
            ambiguous += 1
            continue
        assert detected["direction"] == truth["direction"], (i, truth["caption"])
        assert detected["shape"] == truth["shape"] and detected["colour"] == truth["colour"]
        match = match_events(detected["bounce_frames"], truth["bounce_frames"])
        recalled += match["matched"]
        total += len(truth["bounce_frames"])
        exact += detected["bounce_frames"] == truth["bounce_frames"]
        assert abs(len(detected["bounce_frames"]) - len(truth["bounce_frames"])) <= 1
        assert result["scores"]["motion_score_measured"] == pytest.approx(truth["motion_score"], abs=0.1 + 1e-9)
    assert ambiguous <= NUM_RAW // 5  # the test still covers most clips
    assert recalled == total
    assert exact >= 0.85 * (NUM_RAW - ambiguous)  # others differ by a frame: contact half-way between two frames


@pytest.mark.parametrize("frames_shifted", [2, 3])
def test_audio_shifted_by_frames_loses_sync(clips, frames_shifted):
    real, shifted = [], []
    for _, frames, audio, truth, decoded in clips:
        moved = np.zeros_like(audio)
        moved[:, frames_shifted * SAMPLES_PER_FRAME:] = audio[:, : -frames_shifted * SAMPLES_PER_FRAME]
        real.append(score(*decoded, truth))
        shifted.append(score(*roundtrip(frames, moved), truth))
    before, after = mean_scores(real), mean_scores(shifted)
    assert after["sync_f1"] <= 0.5 * before["sync_f1"]
    assert after["sync_precision"] < 0.6 and after["sync_recall"] < 0.6
    assert after["pitch_accuracy"] == 1.0 and after["colour_accuracy"] == 1.0  # only sync is hit


def test_wrong_colour_drops_colour_accuracy_only(clips):
    results = []
    for i, (params, _, audio, truth, _) in enumerate(clips):
        others = [c for c in CONFIG.colours if c != params["colour"]]
        frames, _, _ = render_clip(CONFIG, {**params, "colour": others[i % len(others)]})
        results.append(score(*roundtrip(frames, audio), truth))
    means = mean_scores(results)
    assert means["colour_accuracy"] == 0.0
    assert means["shape_accuracy"] == 1.0 and means["direction_accuracy"] == 1.0 and means["sync_f1"] >= 0.9


def test_a_beep_every_frame_scores_badly(clips):
    results, bounces = [], []
    for params, frames, _, truth, _ in clips:
        beeps = bounce_audio(CONFIG, list(range(CONFIG.num_frames)), CONFIG.pitches[params["shape"]][1])
        results.append(score(*roundtrip(frames, beeps), truth))
        bounces.append(len(truth["bounce_frames"]))
    for result, n in zip(results, bounces):
        assert len(result["detected"]["onset_frames"]) == CONFIG.num_frames  # abutting tones are told apart
        assert result["scores"]["sync_precision"] == pytest.approx(n / CONFIG.num_frames)
        assert result["scores"]["count_error"] == CONFIG.num_frames - n
    means = mean_scores(results)
    assert means["sync_recall"] == 1.0 and means["sync_precision"] < 0.3 and means["sync_f1"] < 0.45


def test_onsets_through_the_demo_codec_rate_stay_on_time():
    """The pipeline writes 2048 Hz audio, resampled for AAC: tones still decode at their times."""
    rate, onsets = 2048, [0.25, 0.875, 1.0, 1.5]
    config = ShapesConfig(sample_rate=8000)
    audio = bounce_audio(config, [round(t * config.fps) for t in onsets], 500.0)
    from horse.data.av_io import resample_audio

    audio = resample_audio(audio, config.sample_rate, rate)
    frames = np.zeros((CONFIG.num_frames, 32, 32, 3), np.uint8)
    _, decoded, decoded_rate = roundtrip(frames, audio, sample_rate=rate)
    np.testing.assert_allclose(detect_onsets(decoded, decoded_rate), onsets, atol=0.010)


@pytest.mark.parametrize("hz,label", [(300.0, "low"), (500.0, "medium"), (800.0, "high"), (1900.0, None)])
def test_pitch_is_the_nearest_declared_tone(hz, label):
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * math.pi * hz * t))[None]
    found, peak = detect_pitch(tone, rate, CONFIG)
    assert found == label and peak == pytest.approx(hz, abs=2)
    assert detect_pitch(np.zeros((1, rate)), rate, CONFIG) == (None, None)


def test_matching_is_one_to_one_within_a_frame():
    # greedy nearest would pair onset 2 with bounce 2 and leave onset 1 unmatched; the maximum matching pairs both
    assert match_events([1, 2], [2, 3]) == {"matched": 2, "precision": 1.0, "recall": 1.0, "f1": 1.0,
                                            "count_error": 0}
    two_onsets_one_bounce = match_events([4, 5], [5])
    assert two_onsets_one_bounce["precision"] == 0.5 and two_onsets_one_bounce["recall"] == 1.0
    assert two_onsets_one_bounce["f1"] == pytest.approx(2 / 3)
    assert match_events([7], [5])["matched"] == 0  # two frames off: no match
    assert match_events([], [3])["f1"] == 0.0 and match_events([3], [])["precision"] == 0.0
    assert match_events([], [])["f1"] is None  # nothing to judge


def test_track_jitter_sees_frames_out_of_order(clips):
    _, _, _, truth, (frames, audio, rate) = clips[0]
    in_order = score(frames, audio, rate, truth)["scores"]["track_jitter_px"]
    shuffled = score(frames[np.random.default_rng(0).permutation(len(frames))], audio, rate, truth)
    assert in_order < 0.5 < 2.0 < shuffled["scores"]["track_jitter_px"]
    # a track of 2 frames has no second difference; constant velocity has none
    assert track_jitter(np.array([[1.0, 2.0], [3.0, 4.0]])) is None
    assert track_jitter(np.array([[1.0, 2.0], [3.0, 3.0], [5.0, 4.0], [7.0, 5.0]])) == 0.0


def test_a_blank_silent_clip_gets_nothing_right():
    truth = make_clip(CONFIG, 0, "test", 0)[2]
    result = score(np.full((16, 32, 32, 3), 48, np.uint8), np.zeros((1, 32000), np.float32), 16000, truth)
    assert not result["detected"]["shape_found"]
    assert all(result["scores"][f"{label}_correct"] == 0.0 for label in LABELS)
    assert result["scores"]["sync_f1"] is None and result["scores"]["motion_score_measured"] == 0.0
    assert result["scores"]["track_jitter_px"] is None


def test_requested_parameters_are_checked():
    frames, audio, truth = make_clip(CONFIG, 0, "test", 0)
    with pytest.raises(ValueError, match="parse_caption"):
        score_clip(frames, audio, CONFIG.sample_rate, CONFIG.fps, {"colour": "red"}, CONFIG)
