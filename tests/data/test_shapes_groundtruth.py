"""shapes-AV ground truth agrees with its own MP4: shape, colour, size, track and bounces are detected
from decoded pixels, tone onsets and pitches from the decoded AAC waveform, with detectors written here
independently of the generator."""

import numpy as np
import pytest

from horse.data.av_io import decode_mp4
from horse.data.shapes import ShapesConfig, make_sample

CONFIG = ShapesConfig()
NUM_CLIPS = 24
CENTROID_TOLERANCE_PX = 1.0
ONSET_TOLERANCE_S = 0.01  # far tighter than the +-1 frame (125 ms) a model is scored with
PITCH_TOLERANCE = 0.03
AUDIO_THRESHOLD = 0.1  # envelope amplitude (tones are 0.5) above which a tone is "on"
ONSET_MERGE_S = 0.02
STILL_PX = 0.3  # per-axis speeds are >= 1.06 px/frame (slowest diagonal), codec jitter is ~0.1 px  # rising edges closer than this are AAC ripple of one onset


@pytest.fixture(scope="module")
def clips():
    # Both splits' pools: in-distribution (train) and test (half of them held-out pairs).
    samples = [make_sample(CONFIG, 5, split, i) for split in ("train", "test") for i in range(NUM_CLIPS // 2)]
    return [(s["json"], decode_mp4(s["mp4"])) for s in samples]


def detect_shape(frames: np.ndarray) -> dict:
    """Colour, per-frame centroid, fill ratio, vertical skew and side of the one shape in uint8 frames."""
    pixels = frames.astype(np.float64)
    background = np.median(pixels.reshape(-1, 3), axis=0)  # the shape covers < 20% of every frame
    diff = pixels - background
    distance = np.linalg.norm(diff, axis=-1)
    colour = pixels[distance > 0.6 * distance.max()].mean(axis=0)
    axis = colour - background
    alpha = np.clip(diff @ axis / (axis @ axis), 0, 1)  # coverage: linear, so blur keeps its sum
    alpha[alpha < 0.15] = 0  # codec ringing
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]] + 0.5
    area = alpha.sum(axis=(1, 2))
    cx, cy = (alpha * xs).sum(axis=(1, 2)) / area, (alpha * ys).sum(axis=(1, 2)) / area
    width, height = alpha.sum(axis=1).max(axis=1), alpha.sum(axis=2).max(axis=1)  # widest row, tallest column
    dy = ys[None] - cy[:, None, None]
    skew = (alpha * dy**3).sum(axis=(1, 2)) / area / ((alpha * dy**2).sum(axis=(1, 2)) / area) ** 1.5
    return {"background": background, "colour": colour, "centroids": np.stack([cx, cy], axis=1),
            "fill": float(np.median(area / (width * height))), "skew": float(np.median(skew)),
            "side": float(np.median(np.sqrt(width * height)))}


def classify_shape(fill: float, skew: float) -> str:
    # An apex-up triangle's mass sits low (skew -0.57); circle and square are symmetric and differ in
    # fill ratio of their bounding box (pi/4 vs 1).
    if skew < -0.3:
        return "triangle"
    return "square" if fill > 0.9 else "circle"


def nearest(table: dict, value) -> str:
    return min(table, key=lambda name: np.linalg.norm(np.asarray(table[name], float) - value))


def detect_turns(track: np.ndarray) -> list[int]:
    """Frames where the centroid reverses along x or y (the extremes of a bouncing track).

    Steps below STILL_PX are "no motion" (codec noise on a still axis, or the two frames either side of
    a contact half-way between them); a turn is a sign change between consecutive moving steps.
    """
    turns = set()
    for coord in track.T:
        step = np.diff(coord)
        moving = np.nonzero(np.abs(step) > STILL_PX)[0]
        for i, j in zip(moving[:-1], moving[1:]):
            if step[i] * step[j] < 0:
                turns.add(int(i) + 1)  # the frame after the last step towards the wall
    return sorted(turns)


def detect_onsets(audio: np.ndarray, sample_rate: int) -> list[int]:
    """Sample indices where a 1 ms RMS envelope rises above AUDIO_THRESHOLD."""
    window = max(1, int(0.001 * sample_rate))
    envelope = np.sqrt(2 * np.convolve(audio**2, np.ones(window) / window, mode="same"))
    on = envelope > AUDIO_THRESHOLD
    onsets = []
    for rise in np.nonzero(on[1:] & ~on[:-1])[0] + 1:
        if not onsets or rise - onsets[-1] > ONSET_MERGE_S * sample_rate:
            onsets.append(int(rise))
    return onsets


def peak_frequency(segment: np.ndarray, sample_rate: int) -> float:
    n = 1 << 16  # zero-padded FFT: 0.25 Hz bins at 16 kHz
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=n))
    return float(np.fft.rfftfreq(n, 1 / sample_rate)[spectrum.argmax()])


def test_decoded_clip_has_the_configured_format(clips):
    for truth, decoded in clips:
        assert decoded.frames.shape == (CONFIG.num_frames, CONFIG.height, CONFIG.width, 3)
        assert decoded.fps == CONFIG.fps and decoded.sample_rate == CONFIG.sample_rate
        assert decoded.audio.shape == (1, CONFIG.num_samples)


def test_shape_colour_size_and_background_from_pixels(clips):
    seen_shapes = set()
    for truth, decoded in clips:
        found = detect_shape(decoded.frames)
        assert nearest(CONFIG.colours, found["colour"]) == truth["colour"]
        assert nearest(CONFIG.backgrounds, found["background"]) == truth["background"]
        assert classify_shape(found["fill"], found["skew"]) == truth["shape"], found
        assert min(CONFIG.sizes, key=lambda s: abs(CONFIG.sizes[s] - found["side"])) == truth["size"]
        seen_shapes.add(truth["shape"])
    assert seen_shapes == set(CONFIG.shapes)


def test_fill_ratio_orders_triangle_circle_square(clips):
    fills = {}
    for truth, decoded in clips:
        fills.setdefault(truth["shape"], []).append(detect_shape(decoded.frames)["fill"])
    assert max(fills["triangle"]) < min(fills["circle"]) and max(fills["circle"]) < min(fills["square"])
    assert np.median(fills["circle"]) == pytest.approx(np.pi / 4, abs=0.04)
    assert np.median(fills["square"]) == pytest.approx(1.0, abs=0.04)


def test_centroid_track_and_bounces_from_pixels(clips):
    for truth, decoded in clips:
        track = detect_shape(decoded.frames)["centroids"]
        error = np.linalg.norm(track - np.array(truth["centroids_xy"]), axis=1)
        assert error.max() < CENTROID_TOLERANCE_PX, (truth["key"], error.max())
        turns = detect_turns(track)
        gt = truth["bounce_frames"]
        # Every reversal seen in the pixels is a recorded bounce (+-1 frame), and every recorded bounce
        # away from the clip's ends is seen (a contact half-way between frames k and k+1 makes the step
        # k -> k+1 still, so seeing the turn needs one more frame on each side).
        assert all(min((abs(t - b) for b in gt), default=99) <= 1 for t in turns), (turns, gt)
        inner = [b["frame"] for b in truth["bounces"]
                 if 1.5 <= b["contact_time_frames"] <= CONFIG.num_frames - 2.5]
        assert all(min((abs(t - b) for t in turns), default=99) <= 1 for b in inner), (turns, gt)


def test_tone_onsets_and_pitch_from_waveform(clips):
    total = 0
    for truth, decoded in clips:
        audio, sr = decoded.audio[0], decoded.sample_rate
        onsets = detect_onsets(audio, sr)
        assert len(onsets) == len(truth["bounce_frames"]), (onsets, truth["bounce_frames"])
        for onset, expected_s, frame in zip(onsets, truth["tone_onsets_s"], truth["bounce_frames"]):
            assert onset / sr == pytest.approx(expected_s, abs=ONSET_TOLERANCE_S)
            assert round(onset / sr * CONFIG.fps) == frame
            segment = audio[onset: onset + int(CONFIG.tone_duration_s * sr)]
            assert peak_frequency(segment, sr) == pytest.approx(truth["pitch_hz"], rel=PITCH_TOLERANCE)
            total += 1
        if not onsets:
            assert np.abs(audio).max() < AUDIO_THRESHOLD
    assert total >= NUM_CLIPS  # the check ran on many tones
