"""Analytic scorer of shapes-AV clips: what a clip shows and sounds like, measured from its pixels and waveform.

Input: decoded frames uint8 [F, H, W, 3] at ``fps``, audio float [channels, S] at ``sample_rate`` (already on the
video clock: ``horse.data.av_io.decode_mp4`` drops the AAC priming), and the *requested* parameters
(``horse.data.shapes.parse_caption`` of the prompt). Pure numpy/scipy, so the trainer can use it too.

Video: the background is the clip's median colour; a pixel's *coverage* of the shape is its projection on the
background -> shape-colour line (anti-aliased edges count fractionally, so area and centroid are sub-pixel).
Colour = nearest palette entry of the shape's core colour; shape class = triangle when the vertical mass profile
is skewed (skewness -0.566 for the apex-up triangle, 0 for the symmetric shapes), else the nearest fill ratio
area / (extent_x * extent_y) (square 1, circle pi/4); size = nearest side sqrt(area / fill). Per moving axis the
centroid track is fitted with reflected constant-speed motion between walls at the centroid's reach
(``render.centroid_offset``), trying both initial directions (``axis_bounces``): the fit gives the bounce frames
(also at the first and last frame, where no reversal is visible) and the initial direction.
Direction = the fitted initial signs of the moving axes; motion score = the dataset's own definition
(``render.motion_score``) on the centroids. Track jitter = the median over frames of the centroid's second
difference |c[k+1] - 2 c[k] + c[k-1]| in px: 0 for constant velocity (a bounce is one spike, which the median
ignores), large when the object jumps about from frame to frame; it measures temporal coherence on its own,
before any direction is right.

Audio: onsets by hysteresis on the Hilbert envelope; pitch = FFT peak -> nearest pitch (within a tolerance). Sync:
onsets and visual bounces (in frames) matched one to one within ``SYNC_TOLERANCE_FRAMES`` -> precision, recall,
F1, and the count error |#onsets - #bounces|; a clip with neither onsets nor bounces has no sync precision, recall
or F1 (None: left out of the averages, so a blank silent clip cannot score), one with a single empty side scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.optimize import linear_sum_assignment
from scipy.signal import hilbert

from horse.data.shapes.config import ShapesConfig
from horse.data.shapes.render import centroid_offset, motion_score
from horse.metrics.stats import ScoreSpec, finite_or_none

SHAPE_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # area / bounding-box area
SYNC_TOLERANCE_FRAMES = 1  # an onset matches a bounce within +-1 video frame


@dataclass(frozen=True)
class ScorerSettings:
    """Detection thresholds (defaults fit shapes-AV after H.264/AAC coding; see tests/metrics)."""

    min_foreground_distance: float = 40.0  # RGB distance from the background that surely is shape
    core_fraction: float = 0.75  # core pixels: distance >= this x the 95th percentile distance (colour estimate)
    min_coverage: float = 0.1  # coverage below this is codec noise
    min_area_px: float = 4.0  # a frame with less shape area shows no shape
    triangle_skew: float = 0.28  # |skewness| of the row mass profile above this: a triangle (exactly 0.566)
    axis_speed_ratio: float = 0.35  # an axis moves when its median |step| >= this x the median step length
    min_axis_speed_px: float = 0.4  # ... and at least this many px/frame
    fold_margin_px: float = 0.3  # a bounce at the first frame must fit better by this (see axis_bounces)
    envelope_smooth_s: float = 0.004  # moving average of the Hilbert envelope
    silence_level: float = 0.01  # envelope peak below this: no sound at all
    onset_fraction: float = 0.3  # an onset: envelope rises above this x the envelope's 99th percentile
    release_fraction: float = 0.1  # ... after having fallen below this x that level
    min_onset_gap_s: float = 0.05  # onsets closer than this are one
    pitch_min_hz: float = 50.0  # FFT peak search starts here (ignores DC and rumble)
    pitch_tolerance_semitones: float = 3.0  # a peak further than this from every pitch has no pitch label


DEFAULT_SETTINGS = ScorerSettings()


# ---- video ---------------------------------------------------------------------------------------------
def detect_shape(frames: np.ndarray, config: ShapesConfig, settings: ScorerSettings = DEFAULT_SETTINGS) -> dict:
    """Colour, shape, size, per-frame centroids [F, 2] (x, y; NaN where no shape) and areas of one clip."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {frames.shape}")
    px = frames.astype(np.float64)
    num_frames, height, width, _ = px.shape
    background = np.median(px.reshape(-1, 3), axis=0)
    dist = np.linalg.norm(px - background, axis=-1)
    strong = dist >= settings.min_foreground_distance
    empty = {"found": False, "colour": None, "shape": None, "size": None, "side_px": None,
             "centroids": np.full((num_frames, 2), np.nan), "areas": np.zeros(num_frames),
             "background_rgb": background.tolist(), "colour_rgb": None}
    if strong.sum() < settings.min_area_px:
        return empty
    core = dist >= settings.core_fraction * np.percentile(dist[strong], 95)
    colour = np.median(px[core], axis=0)
    axis = colour - background
    coverage = np.clip((px - background) @ axis / (axis @ axis), 0.0, 1.0)
    coverage[coverage < settings.min_coverage] = 0.0
    areas = coverage.sum(axis=(1, 2))
    present = areas >= settings.min_area_px
    if not present.any():
        return empty
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5  # pixel centres
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (coverage.sum(axis=1) * xs).sum(axis=1) / areas
        cy = (coverage.sum(axis=2) * ys).sum(axis=1) / areas
    centroids = np.where(present[:, None], np.stack([cx, cy], axis=1), np.nan)
    extent_x = coverage.max(axis=1).sum(axis=1)  # column-wise max coverage, summed: the box width
    extent_y = coverage.max(axis=2).sum(axis=1)
    fill = float(np.median(areas[present] / (extent_x[present] * extent_y[present])))
    row_mass = coverage.sum(axis=2)[present]  # [frames with a shape, H]
    dy = ys[None, :] - cy[present, None]
    with np.errstate(invalid="ignore", divide="ignore"):  # a one-row shape has no spread: no skewness
        skews = ((row_mass * dy**3).sum(1) / areas[present]) / ((row_mass * dy**2).sum(1) / areas[present]) ** 1.5
    skews = skews[np.isfinite(skews)]
    skew = float(np.median(skews)) if skews.size else math.nan
    shape = _classify_shape(fill, skew, config.shapes, settings)
    side = math.sqrt(float(np.median(areas[present])) / SHAPE_FILL[shape])
    size = min(config.sizes, key=lambda s: abs(config.sizes[s] - side))
    name = min(config.colours, key=lambda c: np.linalg.norm(np.asarray(config.colours[c], float) - colour))
    return {"found": True, "colour": name, "shape": shape, "size": size, "side_px": side, "fill_ratio": fill,
            "vertical_skew": skew,
            "centroids": centroids, "areas": areas, "background_rgb": background.tolist(),
            "colour_rgb": colour.tolist()}


def _classify_shape(fill: float, skew: float, shapes, settings: ScorerSettings) -> str:
    """Triangle when the vertical mass profile is skewed (apex-up: -0.566), else the nearest fill ratio."""
    if "triangle" in shapes and math.isfinite(skew) and abs(skew) >= settings.triangle_skew:
        return "triangle"
    symmetric = [s for s in shapes if s != "triangle"] or list(shapes)
    return min(symmetric, key=lambda s: abs(SHAPE_FILL[s] - fill))


def _fill_gaps(track: np.ndarray) -> np.ndarray | None:
    """Linear interpolation over frames without a shape; None with fewer than two frames showing it."""
    ok = np.isfinite(track[:, 0])
    if ok.sum() < 2:
        return None
    k = np.arange(len(track))
    return np.stack([np.interp(k, k[ok], track[ok, d]) for d in range(2)], axis=1)


def axis_bounces(p: np.ndarray, lo: float, hi: float, step: float,
                 fold_margin_px: float = 0.3) -> tuple[list[int], int, float]:
    """Fit reflected constant-speed motion to a moving 1-D track ``p`` [F] between walls lo < hi.

    ``step``: the axis's speed in px/frame. Both initial directions are tried; from each observed position the
    next one is predicted (straight on, or folded at the wall when the wall is nearer than ``step``, a contact
    at k + gap/step whose bounce frame is the nearest frame, as in ``render.trajectory``). A shape starting at a
    wall fits both nearly equally (they differ by 2 x its gap): the fit with a bounce at frame 0 must then win by
    ``fold_margin_px``. Returns the bounce frames, the initial direction (+1 / -1) and the mean prediction error.
    """
    fits = {}
    for first in (+1, -1):
        sign, bounces, error = first, [], 0.0
        for k in range(len(p) - 1):
            gap = max(0.0, hi - p[k] if sign > 0 else p[k] - lo)
            if gap < step:  # the wall is reached within this frame step
                bounces.append(math.floor(k + gap / step + 0.5))
                predicted = p[k] + sign * (2 * gap - step)
                sign = -sign
            else:
                predicted = p[k] + sign * step
            error += abs(p[k + 1] - predicted)
        fits[first] = (bounces, error)
    first = min(fits, key=lambda s: fits[s][1])
    other = -first
    if fits[first][0][:1] == [0] and fits[other][0][:1] != [0] and fits[other][1] - fits[first][1] < fold_margin_px:
        first = other
    bounces, error = fits[first]
    return bounces, first, error / max(1, len(p) - 1)


def track_jitter(centroids: np.ndarray) -> float | None:
    """Median |second difference| of a centroid track ``[F, 2]`` in px (gaps interpolated); None below 3 frames."""
    track = _fill_gaps(centroids)
    if track is None or len(track) < 3:
        return None
    return float(np.median(np.linalg.norm(np.diff(track, n=2, axis=0), axis=1)))


def analyse_motion(shape: dict, config: ShapesConfig, settings: ScorerSettings = DEFAULT_SETTINGS) -> dict:
    """Direction name (or None), measured motion score, mean speed and bounce frames from ``detect_shape``."""
    none = {"direction": None, "axis_signs": [0, 0], "mean_speed_px": 0.0, "motion_score": 0.0, "bounce_frames": []}
    track = _fill_gaps(shape["centroids"]) if shape["found"] else None
    if track is None:
        return none
    steps = np.diff(track, axis=0)
    step_length = float(np.median(np.linalg.norm(steps, axis=1)))
    side = shape["side_px"]
    offset = centroid_offset(shape["shape"], side)
    extent = (config.width, config.height)
    signs, bounces = [0, 0], set()
    for d in range(2):
        sizes = np.sort(np.abs(steps[:, d]))
        if np.median(sizes) < max(settings.min_axis_speed_px, settings.axis_speed_ratio * step_length):
            continue
        axis_step = float(sizes[len(sizes) // 4:].mean())  # steps folded at a wall are the short ones: drop them
        lo, hi = offset[d], extent[d] - side + offset[d]  # the centroid's reach between the walls
        frames, signs[d], _ = axis_bounces(track[:, d], lo, hi, axis_step, settings.fold_margin_px)
        bounces.update(frames)
    direction = None
    for name, vec in config.directions.items():
        if [int(np.sign(round(v, 6))) for v in vec] == signs:
            direction = name
    mean_speed = float(np.linalg.norm(steps, axis=1).mean())
    return {"direction": direction, "axis_signs": signs, "mean_speed_px": mean_speed,
            "motion_score": motion_score(track, config.motion_score_max_speed), "bounce_frames": sorted(bounces)}


# ---- audio ---------------------------------------------------------------------------------------------
def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {audio.shape}")
    return audio.mean(axis=0)


def detect_onsets(audio: np.ndarray, sample_rate: int, settings: ScorerSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """Onset times in seconds (sorted) of the tones in ``audio`` [channels, S]."""
    x = _mono(audio)
    if x.size == 0:
        return np.zeros(0)
    smooth = max(1, int(round(settings.envelope_smooth_s * sample_rate)))
    envelope = uniform_filter1d(np.abs(hilbert(x)), smooth)
    level = float(np.percentile(envelope, 99))
    if envelope.max() < settings.silence_level or level <= 0:
        return np.zeros(0)
    on, off = settings.onset_fraction * level, settings.release_fraction * level
    onsets, armed = [], True
    min_gap = settings.min_onset_gap_s * sample_rate
    for i in np.flatnonzero((envelope >= on) | (envelope < off)):  # only samples that can change the state
        if envelope[i] < off:
            armed = True
        elif armed:
            armed = False
            if not onsets or i - onsets[-1] >= min_gap:
                onsets.append(i)
    return np.asarray(onsets, np.float64) / sample_rate


def detect_pitch(audio: np.ndarray, sample_rate: int, config: ShapesConfig,
                 settings: ScorerSettings = DEFAULT_SETTINGS) -> tuple[str | None, float | None]:
    """(pitch label, peak Hz) of the loudest frequency; label None when off every pitch, (None, None) for silence."""
    x = _mono(audio)
    if x.size == 0 or np.abs(x).max() < settings.silence_level:
        return None, None
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    band = freqs >= settings.pitch_min_hz
    if not band.any():
        return None, None
    peak = float(freqs[band][np.argmax(spectrum[band])])
    label, hz = min(config.pitches.values(), key=lambda lh: abs(math.log(lh[1] / peak)))
    if abs(12 * math.log2(hz / peak)) > settings.pitch_tolerance_semitones:
        return None, peak
    return label, peak


def match_events(onset_frames, bounce_frames, tolerance: int = SYNC_TOLERANCE_FRAMES) -> dict:
    """One-to-one matching of onset frames to bounce frames within ``tolerance`` frames (maximum matching,
    then closest): ``{"matched", "precision", "recall", "f1", "count_error"}``; precision, recall and F1 are None
    when there are neither onsets nor bounces, and 0 when only one side is empty."""
    onsets, bounces = np.asarray(onset_frames, float), np.asarray(bounce_frames, float)
    matched = 0
    if len(onsets) and len(bounces):
        delta = np.abs(onsets[:, None] - bounces[None, :])
        unmatched_cost = 1.0 + delta.size * (tolerance + 1)  # dearer than any set of valid pairs
        rows, cols = linear_sum_assignment(np.where(delta <= tolerance, delta, unmatched_cost))
        matched = int((delta[rows, cols] <= tolerance).sum())
    n_on, n_b = len(onsets), len(bounces)
    if n_on == 0 and n_b == 0:  # nothing to judge: undefined rather than perfect (a blank clip must not score)
        return {"matched": 0, "precision": None, "recall": None, "f1": None, "count_error": 0}
    precision = matched / n_on if n_on else 0.0
    recall = matched / n_b if n_b else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"matched": matched, "precision": precision, "recall": recall, "f1": f1, "count_error": abs(n_on - n_b)}


# ---- one clip -----------------------------------------------------------------------------------------
def score_clip(frames: np.ndarray, audio: np.ndarray | None, sample_rate: int | None, fps: float,
               requested: dict, config: ShapesConfig | None = None,
               settings: ScorerSettings = DEFAULT_SETTINGS) -> dict:
    """Per-clip scores ``{"scores": {...}, "detected": {...}}`` against ``requested`` (``parse_caption`` keys).

    scores: colour/shape/size/direction/pitch_correct (0/1), motion_score_requested / _measured and
    motion_abs_error, sync_precision / sync_recall / sync_f1 and count_error (see module docstring).
    """
    config = config or ShapesConfig()
    missing = {"colour", "shape", "size", "direction", "pitch", "motion_score"} - set(requested)
    if missing:
        raise ValueError(f"requested parameters lack {sorted(missing)}; pass parse_caption(prompt)")
    shape = detect_shape(frames, config, settings)
    motion = analyse_motion(shape, config, settings)
    if audio is None or sample_rate is None:
        onsets, (pitch, pitch_hz) = np.zeros(0), (None, None)
    else:
        onsets, (pitch, pitch_hz) = detect_onsets(audio, sample_rate, settings), detect_pitch(audio, sample_rate,
                                                                                             config, settings)
    onset_frames = [int(round(t * fps)) for t in onsets]
    sync = match_events(onset_frames, motion["bounce_frames"])
    wanted_motion = requested["motion_score"]
    scores = {f"{k}_correct": float(v == requested[k]) for k, v in
              (("colour", shape["colour"]), ("shape", shape["shape"]), ("size", shape["size"]),
               ("direction", motion["direction"]), ("pitch", pitch))}
    scores.update({
        "motion_score_requested": None if wanted_motion is None else float(wanted_motion),
        "motion_score_measured": motion["motion_score"],
        "motion_abs_error": None if wanted_motion is None else abs(motion["motion_score"] - wanted_motion),
        "sync_precision": sync["precision"], "sync_recall": sync["recall"], "sync_f1": sync["f1"],
        "count_error": float(sync["count_error"]),
        "track_jitter_px": track_jitter(shape["centroids"]) if shape["found"] else None,
    })
    detected = {
        "shape_found": shape["found"], "colour": shape["colour"], "colour_rgb": shape["colour_rgb"],
        "shape": shape["shape"], "size": shape["size"], "side_px": shape["side_px"],
        # what the shape call rests on: area / bounding box (SHAPE_FILL) and the row profile's skewness
        "fill_ratio": finite_or_none(shape.get("fill_ratio")),
        "vertical_skew": finite_or_none(shape.get("vertical_skew")),
        "direction": motion["direction"], "mean_speed_px": motion["mean_speed_px"],
        "bounce_frames": motion["bounce_frames"], "onset_times_s": [round(float(t), 4) for t in onsets],
        "track_px": [[round(float(v), 2) for v in c] for c in shape["centroids"]] if shape["found"] else None,
        "onset_frames": onset_frames, "pitch": pitch, "pitch_hz": pitch_hz, "sync_matched": sync["matched"],
    }
    return {"scores": scores, "detected": detected}


# Reported scores over clips (``horse.metrics.stats.summarise_scores``).
SCORES = {
    "colour_accuracy": ScoreSpec("proportion", ("colour_correct",), description="shape colour = requested"),
    "shape_accuracy": ScoreSpec("proportion", ("shape_correct",), description="shape class = requested"),
    "size_accuracy": ScoreSpec("proportion", ("size_correct",), description="shape size = requested"),
    "direction_accuracy": ScoreSpec("proportion", ("direction_correct",),
                                    description="initial direction of motion = requested"),
    "pitch_accuracy": ScoreSpec("proportion", ("pitch_correct",), description="tone pitch = requested"),
    "motion_correlation": ScoreSpec("pearson", ("motion_score_requested", "motion_score_measured"),
                                    description="Pearson r of requested vs measured motion score"),
    "motion_abs_error": ScoreSpec("mean", ("motion_abs_error",), higher_is_better=False,
                                  description="|measured - requested motion score|"),
    "sync_precision": ScoreSpec("mean", ("sync_precision",), description="beep onsets at a bounce (+-1 frame)"),
    "sync_recall": ScoreSpec("mean", ("sync_recall",), description="bounces with a beep onset (+-1 frame)"),
    "sync_f1": ScoreSpec("mean", ("sync_f1",), description="F1 of beep onsets vs visual bounces (+-1 frame)"),
    "count_error": ScoreSpec("mean", ("count_error",), higher_is_better=False,
                             description="|#beep onsets - #visual bounces|"),
    "track_jitter_px": ScoreSpec("mean", ("track_jitter_px",), higher_is_better=False,
                                 description="median |second difference| of the object's centroid (px/frame^2)"),
}
