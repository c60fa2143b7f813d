"""shapes_av: generate from shapes-AV test captions and score each clip from its pixels and waveform.

For each of the first ``size.clips`` clips of the dataset's test split (deterministic from the dataset config and
seed, so no files are needed), the checkpoint generates a clip from the caption (duration, fps and resolution of
the dataset; seed ``suite.seed + index``; the suite's fast sampler), written as MP4 and decoded back like any
viewer would (``decode_mp4`` drops the AAC priming). ``horse.metrics.shapes_av.score_clip`` scores it against the
parameters parsed from the caption. Scores are reported for in-distribution and held-out colour x shape pairs apart
(and all together), each with a 95% interval over clips, the chance level and the ceiling: the same scorer on the
real test clips.

``suite.mode=v2a`` instead adds sound to each real test clip (its picture kept, only the audio generated): the
audio scores (pitch, sync, count) then measure how well the model hears the picture, apart from how well it draws
it; the video scores are the real clips' own.

Chance levels: 1 / #labels for the accuracies, 0 for the motion correlation, E|x_i - x_j| over the group's
requested motion scores for the motion error (a score unrelated to the prompt), a random-onset baseline for sync
(as many onsets as the real clip has bounces, at uniform random times; ``CHANCE_DRAWS`` draws, seeded) and
E|n_i - n_j| over the real clips' bounce counts for the count error.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

GROUPS = ("in_distribution", "held_out", "all")
MODES = ("t2v", "v2a")
CHANCE_DRAWS = 200  # random-onset draws per clip for the sync chance level
JITTER_CHANCE_DRAWS = 20  # frame shuffles per real track for the track-jitter chance level
CHANCE_SEED = 0
ACCURACY_LABELS = {"colour_accuracy": "colours", "shape_accuracy": "shapes", "size_accuracy": "sizes",
                   "direction_accuracy": "directions", "pitch_accuracy": "pitches"}


def dataset_config(suite_cfg) -> tuple:
    """(ShapesConfig, seed, root or None): from a ``make_shapes`` folder's manifest when ``dataset.root`` is set."""
    from horse.data.shapes import ShapesConfig, read_manifest

    data = suite_cfg.dataset
    if data.get("root"):
        manifest = read_manifest(Path(data.root).expanduser())
        return ShapesConfig.from_dict(manifest["config"]), int(manifest["seed"]), str(data.root)
    overrides = dict(data.get("config") or {})
    return ShapesConfig.from_dict({**ShapesConfig().to_dict(), **overrides}), int(data.seed), None


def score_file(mp4, caption: str, config) -> dict:
    """Per-clip ``{"scores", "detected"}`` of an MP4 (path or bytes) against its caption."""
    from horse.data.av_io import decode_mp4
    from horse.data.shapes import parse_caption
    from horse.metrics.shapes_av import score_clip

    clip = decode_mp4(mp4)
    return score_clip(clip.frames, clip.audio, clip.sample_rate, clip.fps, parse_caption(caption, config), config)


def _sync_chance(bounce_lists: list[list[int]], config) -> dict:
    from horse.metrics.shapes_av import match_events

    rng = np.random.default_rng(CHANCE_SEED)
    sums, count = {"precision": 0.0, "recall": 0.0, "f1": 0.0}, 0
    for bounces in bounce_lists:
        if not bounces:
            continue
        for _ in range(CHANCE_DRAWS):
            onsets = np.round(rng.uniform(0, config.duration_s, len(bounces)) * config.fps)
            result = match_events(onsets, bounces)
            for key in sums:
                sums[key] += result[key]
            count += 1
    return {f"sync_{k}": (v / count if count else None) for k, v in sums.items()}


def _mean_pair_difference(values) -> float | None:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return None
    diff = np.abs(values[:, None] - values[None, :])
    return float(diff.sum() / (len(values) * (len(values) - 1)))


def _jitter_chance(tracks: list) -> float | None:
    """Track jitter of the real tracks with their frames shuffled: an object where it should be, but in no order."""
    from horse.metrics.shapes_av import track_jitter

    rng = np.random.default_rng(CHANCE_SEED)
    values = [track_jitter(rng.permutation(np.asarray(t, np.float64)))
              for t in tracks if t is not None for _ in range(JITTER_CHANCE_DRAWS)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def chance_levels(config, reference: list[dict]) -> dict:
    """Chance level of every score for one group of clips (``reference``: its real clips' scorer outputs)."""
    chance = {name: 1.0 / len(getattr(config, attr)) for name, attr in ACCURACY_LABELS.items()}
    requested = [r["scores"]["motion_score_requested"] for r in reference
                 if r["scores"]["motion_score_requested"] is not None]
    bounces = [r["detected"]["bounce_frames"] for r in reference]
    chance.update(motion_correlation=0.0, motion_abs_error=_mean_pair_difference(requested),
                  count_error=_mean_pair_difference([len(b) for b in bounces]), **_sync_chance(bounces, config),
                  track_jitter_px=_jitter_chance([r["detected"].get("track_px") for r in reference]))
    return chance


def _group_of(clip: dict, group: str) -> bool:
    return group == "all" or (group == "held_out") == clip["held_out"]


def summarise_groups(clips: list[dict], config) -> dict:
    """Scores of every group: model value + interval, chance, ceiling (real clips) + interval."""
    from horse.metrics.shapes_av import SCORES
    from horse.metrics.stats import summarise_scores

    groups = {}
    for group in GROUPS:
        members = [c for c in clips if _group_of(c, group)]
        if not members:
            continue
        model = summarise_scores([c["scores"] for c in members], SCORES)
        ceiling = summarise_scores([c["reference_scores"] for c in members], SCORES)
        chance = chance_levels(config, [{"scores": c["reference_scores"], "detected": c["reference_detected"]}
                                        for c in members])
        for name, entry in model.items():
            entry.update(chance=chance.get(name), ceiling=ceiling[name]["value"], ceiling_ci=ceiling[name]["ci"])
        groups[group] = {"n": len(members), "scores": model}
    return groups


def _check_checkpoint(pipeline, config) -> None:
    cfg = pipeline.config
    if config.fps not in cfg.fps_options:
        raise ValueError(f"the checkpoint offers fps {cfg.fps_options}, but shapes-AV clips run at {config.fps} fps")
    if [config.height, config.width] not in [list(v) for v in cfg.resolutions.values()]:
        raise ValueError(f"the checkpoint offers resolutions {cfg.resolutions}, but shapes-AV clips are "
                         f"{config.height}x{config.width}; evaluate a checkpoint trained on shapes-AV")
    lo, hi = cfg.durations
    if not lo <= config.duration_s <= hi:
        raise ValueError(f"the checkpoint generates {lo}..{hi} s, but shapes-AV clips last {config.duration_s} s")


def run(cfg, context) -> dict:
    from tqdm import tqdm

    from horse.data.shapes import code_version as data_code_version
    from horse.data.shapes import make_sample
    from horse.metrics.shapes_av import SYNC_TOLERANCE_FRAMES
    from horse.pipeline import Pipeline

    suite, size = cfg.suite, cfg.size
    config, data_seed, root = dataset_config(suite)
    count = int(size.clips)
    if count < 1:
        raise ValueError(f"size.clips must be >= 1, got {count}")
    mode = suite.get("mode", "t2v")
    if mode not in MODES:
        raise ValueError(f"suite.mode must be one of {MODES}, got {mode!r}")
    # Pipeline.generate settings; null means the checkpoint's default
    sampler = {k: v for k, v in dict(suite.generate).items() if v is not None}
    if size.get("steps") is not None:
        sampler["steps"] = int(size.steps)
    timings, start = {}, time.perf_counter()
    pipeline = Pipeline(context.checkpoint, context.device)
    _check_checkpoint(pipeline, config)  # before any work: a wrong checkpoint fails at once
    timings["load_s"] = time.perf_counter() - start

    start, clips = time.perf_counter(), []
    (context.out_dir / "reference").mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(count), desc="reference clips", unit="clip", disable=not context.progress):
        sample = make_sample(config, data_seed, suite.split, index)
        truth, reference = sample["json"], f"reference/{sample['__key__']}.mp4"
        (context.out_dir / reference).write_bytes(sample["mp4"])
        scored = score_file(sample["mp4"], truth["caption"], config)
        clips.append({"id": sample["__key__"], "index": index, "held_out": bool(truth["held_out"]),
                      "group": "held_out" if truth["held_out"] else "in_distribution", "prompt": truth["caption"],
                      "video": f"clips/{sample['__key__']}.mp4", "reference": reference,
                      "reference_scores": scored["scores"], "reference_detected": scored["detected"]})
    timings["reference_s"] = time.perf_counter() - start

    start, metadata = time.perf_counter(), None
    for clip in tqdm(clips, desc="generating + scoring", unit="clip", disable=not context.progress):
        given = context.out_dir / clip["reference"] if mode == "v2a" else None
        result = pipeline.generate(clip["prompt"], context.out_dir / clip["video"], duration=config.duration_s,
                                   fps=config.fps, resolution=[config.height, config.width], video=given,
                                   seed=int(suite.seed) + clip["index"], **sampler)
        metadata = result.metadata
        scored = score_file(result.path, clip["prompt"], config)
        clip.update(scores=scored["scores"], detected=scored["detected"], seed=metadata["seed"])
    timings["generate_and_score_s"] = time.perf_counter() - start
    timings["per_clip_s"] = timings["generate_and_score_s"] / count

    settings = {
        "clips": count, "split": suite.split, "generation_seed": int(suite.seed), "mode": mode,
        "sampler": {k: metadata[k] for k in ("sampler", "steps", "shift", "audio_after_video")},
        "guidance": metadata["guidance"],
        "fps": config.fps, "duration_s": config.duration_s, "resolution": [config.height, config.width],
        "dataset": {"root": root, "seed": data_seed, "config": config.to_dict(), "code_version": data_code_version()},
        "sync_tolerance_frames": SYNC_TOLERANCE_FRAMES, "chance_draws": CHANCE_DRAWS,
    }
    return {"settings": settings, "groups": summarise_groups(clips, config), "clips": clips, "timings": timings}


def plots(results: dict) -> list[tuple[str, bytes]]:
    """Requested vs measured motion score of the generated and the real clips."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    rng = np.random.default_rng(0)  # jitter: scores are on a 0.1 grid
    for key, label, marker in (("scores", "generated", "o"), ("reference_scores", "real clips", "x")):
        pts = [(c[key]["motion_score_requested"], c[key]["motion_score_measured"]) for c in results["clips"]
               if c.get(key) and c[key]["motion_score_requested"] is not None]
        if pts:
            x, y = np.asarray(pts).T
            ax.scatter(x + rng.uniform(-0.02, 0.02, len(x)), y + rng.uniform(-0.02, 0.02, len(y)), s=14,
                       marker=marker, alpha=0.7, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set(xlabel="requested motion score", ylabel="measured motion score", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    ax.legend(loc="upper left")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return [("Motion: requested vs measured", buffer.getvalue())]
