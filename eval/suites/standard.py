"""Standard suite: the field's automatic metrics on clips generated from the fixed prompt set.

Per clip (scored against the clip's own prompt; mean with a bootstrap interval over clips):
- ``clip_score``: CLIP score of sampled frames vs the prompt's English main body (``horse.metrics.clip_score``).
- ``wer`` / ``cer``: Whisper transcript of the generated audio vs the Dialogue lines (``horse.metrics.asr``,
  normalisation and CJK tokenisation of ``horse.metrics.text_metrics``); the corpus rates over all clips are in
  ``set_scores`` as ``wer_corpus`` / ``cer_corpus``.
- ``sync_confidence`` / ``sync_distance`` / ``sync_offset``: SyncNet LSE-C / LSE-D on centre crops retimed to
  25 fps (``horse.metrics.sync``; no face detector: an approximation for single centred speakers).
Per set (generated vs ``reference_dir``'s real MP4s, no interval; ``set_scores``): ``fvd`` (I3D) and ``fad``
(VGGish). A metric whose weights path (``weights.<name>``) or reference folder is unset is reported as
skipped with the reason, never silently zero. Weights are only read from local paths, checked against the
committed key lists (``horse/metrics/key_lists``); override a list with ``key_lists.<name>``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from eval.suites.prompts import generate_clips, parse_enhanced_prompt, select_prompts, suite_settings

WEIGHT_NAMES = ("clip", "whisper", "syncnet", "i3d", "vggish")
REFERENCE_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


def _retime(frames: np.ndarray, fps: float, target: float) -> np.ndarray:
    from horse.pipeline.media import retime_indices

    count = max(1, round(len(frames) * target / fps))
    return frames[retime_indices(len(frames), fps, target, count)]


def read_reference_dir(folder, limit: int | None = None) -> list:
    """Decoded real clips (``horse.data.av_io.DecodedClip``) of a folder, sorted by name."""
    from horse.data.av_io import decode_mp4

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reference_dir {folder} is not a folder of real clips")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in REFERENCE_SUFFIXES)[:limit]
    if len(files) < 2:
        raise ValueError(f"reference_dir {folder} holds {len(files)} clips; FVD/FAD need at least 2 "
                         "(hundreds to mean much)")
    return [decode_mp4(p) for p in files]


def _clip_to_frames(frames: np.ndarray, length: int) -> np.ndarray:
    """Cut or loop-pad a clip to ``length`` frames (FVD compares clips of one length)."""
    idx = np.arange(length) % len(frames)
    return frames[idx]


def score_clips(records: list[dict], settings: dict, device: str, skipped: dict) -> list[dict]:
    """Per-clip scores for each generated record (keys are None where a metric was skipped)."""
    from horse.metrics import text_metrics

    weights, key_lists = settings.get("weights") or {}, settings.get("key_lists") or {}
    scores = [{"clip_score": None, "wer": None, "cer": None, "sync_confidence": None, "sync_distance": None,
               "sync_offset": None} for _ in records]
    if weights.get("clip"):
        from horse.metrics.clip_score import CLIP_KEY_LIST, clip_scores, load_clip

        model, tokenizer = load_clip(weights["clip"], key_lists.get("clip", CLIP_KEY_LIST), device)
        mains = [parse_enhanced_prompt(r["entry"]["prompt"]).main for r in records]
        for s, value in zip(scores, clip_scores(model, tokenizer, [r["frames"] for r in records], mains)):
            s["clip_score"] = value
    else:
        skipped["clip_score"] = "no weights.clip path"
    if weights.get("whisper"):
        from horse.metrics.asr import WHISPER_KEY_LIST, load_whisper, transcribe

        model, processor = load_whisper(weights["whisper"], key_lists.get("whisper", WHISPER_KEY_LIST), device)
        for s, r in zip(scores, records):
            text = transcribe(model, processor, [r["audio"]], r["sample_rate"], language=r["entry"]["language"],
                              max_new_tokens=settings.get("asr_max_new_tokens", 200))[0]
            reference = " ".join(r["entry"]["speech"])
            s["transcript"] = text
            s["wer"] = text_metrics.wer(reference, text)
            s["cer"] = text_metrics.cer(reference, text)
    else:
        skipped["wer"] = skipped["cer"] = "no weights.whisper path"
    if weights.get("syncnet"):
        from horse.metrics.sync import SYNC_FPS, SYNC_KEY_LIST, center_square_crop, load_syncnet, sync_scores

        model = load_syncnet(weights["syncnet"], key_lists.get("syncnet", SYNC_KEY_LIST), device)
        for s, r in zip(scores, records):
            frames = center_square_crop(_retime(r["frames"], r["metadata"]["fps"], SYNC_FPS))
            try:
                result = sync_scores(model, frames, r["audio"], r["sample_rate"],
                                     vshift=settings.get("sync_vshift", 15))
            except ValueError as err:  # too short for SyncNet: left undefined for this clip
                s["sync_error"] = str(err)
                continue
            s.update(sync_confidence=result.confidence, sync_distance=result.distance, sync_offset=result.offset)
    else:
        skipped["sync"] = "no weights.syncnet path"
    return scores


def set_scores(records: list[dict], settings: dict, device: str, skipped: dict) -> dict:
    """FVD and FAD of the generated set against ``reference_dir``."""
    weights, key_lists = settings.get("weights") or {}, settings.get("key_lists") or {}
    out = {}
    reference_dir = settings.get("reference_dir")
    if not reference_dir:
        skipped["fvd"] = skipped["fad"] = "no reference_dir of real clips"
        return out
    if not (weights.get("i3d") or weights.get("vggish")):
        skipped["fvd"] = skipped["fad"] = "no weights.i3d / weights.vggish path"
        return out
    real = read_reference_dir(reference_dir, settings.get("reference_limit"))
    if weights.get("i3d"):
        from horse.metrics.fvd import I3D_KEY_LIST, fvd, load_i3d

        length = int(settings.get("fvd_frames", 16))
        model = load_i3d(weights["i3d"], key_lists.get("i3d", I3D_KEY_LIST), device)
        out["fvd"] = fvd(model, [_clip_to_frames(c.frames, length) for c in real],
                         [_clip_to_frames(r["frames"], length) for r in records])
    else:
        skipped["fvd"] = "no weights.i3d path"
    if weights.get("vggish"):
        from horse.metrics.fad import VGGISH_KEY_LIST, load_vggish, vggish_embeddings
        from horse.metrics.frechet import frechet_distance_from_features

        model = load_vggish(weights["vggish"], key_lists.get("vggish", VGGISH_KEY_LIST), device)
        real_emb = np.concatenate([vggish_embeddings(model, [c.audio], c.sample_rate)
                                   for c in real if c.audio is not None])
        gen_emb = np.concatenate([vggish_embeddings(model, [r["audio"]], r["sample_rate"]) for r in records])
        out["fad"] = frechet_distance_from_features(real_emb, gen_emb)
    else:
        skipped["fad"] = "no weights.vggish path"
    return out


SCORES = {  # name: (per-clip key, higher is better, description)
    "clip_score": ("clip_score", True, "CLIP score (100 x cosine) of frames vs the prompt's main body"),
    "wer": ("wer", False, "word error rate of Whisper transcripts vs the dialogue (CJK by character)"),
    "cer": ("cer", False, "character error rate of Whisper transcripts vs the dialogue"),
    "sync_confidence": ("sync_confidence", True, "SyncNet LSE-C on centre crops"),
    "sync_distance": ("sync_distance", False, "SyncNet LSE-D on centre crops"),
}


def run(cfg, context) -> dict:
    from horse.metrics import text_metrics
    from horse.metrics.stats import ScoreSpec, summarise_scores
    from horse.pipeline import Pipeline

    settings = suite_settings(cfg)
    out_dir, start = Path(context.out_dir), time.perf_counter()
    prompts = select_prompts(settings)
    records = generate_clips(Pipeline(context.checkpoint, context.device), prompts, out_dir, "clips",
                             dict(settings.get("generation") or {}), keep_media=True)
    timings = {"generate": time.perf_counter() - start}
    skipped: dict[str, str] = {}
    start = time.perf_counter()
    per_clip = score_clips(records, settings, context.device, skipped)
    sets = set_scores(records, settings, context.device, skipped)
    if any(s["wer"] is not None for s in per_clip):
        refs = [" ".join(r["entry"]["speech"]) for r in records]
        hyps = [s.get("transcript", "") for s in per_clip]
        sets.update(wer_corpus=text_metrics.wer(refs, hyps), cer_corpus=text_metrics.cer(refs, hyps))
    timings["score"] = time.perf_counter() - start
    specs = {name: ScoreSpec("mean", (key,), higher_is_better=hib, description=desc)
             for name, (key, hib, desc) in SCORES.items() if any(s[key] is not None for s in per_clip)}
    clips = [{"id": r["entry"]["id"], "group": r["entry"]["language"], "prompt": r["entry"]["prompt"],
              "video": r["video"], "reference": None, "scores": s, "detected": {}} for r, s in zip(records, per_clip)]
    groups = {"all": {"n": len(clips), "scores": summarise_scores(per_clip, specs)}}
    for language in sorted({c["group"] for c in clips}):
        members = [c["scores"] for c in clips if c["group"] == language]
        groups[language] = {"n": len(members), "scores": summarise_scores(members, specs)}
    return {"settings": {"prompt_set": settings.get("prompt_set"), "prompts": len(prompts),
                         "generation": settings.get("generation") or {}, "skipped": skipped,
                         "weights": {k: v for k, v in (settings.get("weights") or {}).items() if v},
                         "reference_dir": settings.get("reference_dir")},
            "groups": groups, "clips": clips, "set_scores": sets, "timings": timings}


__all__ = ["read_reference_dir", "run", "score_clips", "set_scores"]
