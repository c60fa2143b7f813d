"""``horse data inspect``: counts, durations, resolutions, buckets and a contact sheet of a dataset.

Works on raw MP4 shards (decoded with PyAV; buckets are those ``ClipConfig`` would assign) and on
latent caches (read from the cached json; no contact sheet, latents are not pixels).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from .av_io import decode_mp4
from .decode import VIDEO_FIELDS, ClipConfig, caption_of, choose_size
from .shards import decode_field, expand_shards
from .stream import iter_raw_samples

log = logging.getLogger(__name__)

SHEET_SAMPLES = 16          # samples shown on the contact sheet
SHEET_FRAMES = 4            # frames per sample (evenly spaced)
SHEET_TILE = 96             # tile height in pixels
SHEET_GAP = 2               # pixels between tiles


def _describe(values) -> dict:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max()), "total": float(a.sum())}


def _tile(frame: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def contact_sheet(rows: list[list[np.ndarray]], path: str | Path, tile: int = SHEET_TILE, gap: int = SHEET_GAP) -> Path:
    """Rows of uint8 RGB frames -> one PNG (each row one sample, frames left to right)."""
    from PIL import Image
    tiled = [[_tile(f, tile) for f in row] for row in rows if row]
    if not tiled:
        raise ValueError("no frames to put on the contact sheet")
    width = max(sum(t.shape[1] + gap for t in row) for row in tiled)
    sheet = np.full((len(tiled) * (tile + gap), width, 3), 255, np.uint8)
    for r, row in enumerate(tiled):
        x = 0
        for t in row:
            sheet[r * (tile + gap): r * (tile + gap) + tile, x:x + t.shape[1]] = t
            x += t.shape[1] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


def inspect_dataset(spec, cfg: ClipConfig | None = None, max_samples: int | None = None,
                    sheet_path: str | Path | None = None, sheet_samples: int = SHEET_SAMPLES,
                    sheet_frames: int = SHEET_FRAMES) -> dict:
    """Statistics of a dataset (see module docstring); writes the contact sheet when ``sheet_path``."""
    urls = expand_shards(spec)
    cfg = cfg or ClipConfig()
    counters: Counter = Counter()
    durations, resolutions, buckets, fps_values, caption_words = [], Counter(), Counter(), Counter(), []
    rows: list[list[np.ndarray]] = []
    kind = None
    for raw in iter_raw_samples(urls, counters):
        if max_samples is not None and counters["samples"] >= max_samples:
            break
        counters["samples"] += 1
        key = raw["__key__"]
        try:
            meta = decode_field("json", raw["json"]) if "json" in raw else {}
            if "video.npy" in raw:  # a latent cache
                kind = kind or "latent cache"
                buckets[tuple(meta["bucket"])] += 1
                caption_words.append(len(meta.get("caption", "").split()))
                continue
            kind = kind or "mp4"
            field = next((f for f in VIDEO_FIELDS if f in raw), None)
            if field is None:
                raise ValueError(f"no video field (fields: {sorted(k for k in raw if not k.startswith('__'))})")
            clip = decode_mp4(raw[field], want_audio=True)
        except Exception as e:
            counters["bad"] += 1
            log.warning("sample %s of %s is unreadable: %s: %s", key, raw.get("__url__"), type(e).__name__, e)
            continue
        caption = caption_of({**raw, "json": meta, "txt": raw.get("txt", b"")}).strip()
        counters["no_audio"] += clip.audio is None
        counters["empty_caption"] += not caption
        caption_words.append(len(caption.split()))
        durations.append(clip.duration)
        fps_values[round(clip.fps, 3)] += 1
        h, w = clip.frames.shape[1:3]
        resolutions[f"{h}x{w}"] += 1
        fits = [f for f in cfg.frame_counts if f / cfg.fps <= clip.duration + 1e-6]
        buckets[(fits[0], *choose_size(h, w, cfg.sizes)) if fits else "too_short"] += 1
        if sheet_path is not None and len(rows) < sheet_samples:
            picks = np.linspace(0, clip.num_frames - 1, min(sheet_frames, clip.num_frames)).round().astype(int)
            rows.append([clip.frames[i] for i in picks])
    report = {
        "kind": kind or "empty", "shards": len(urls), "samples": counters["samples"], "bad": counters["bad"],
        "unreadable_shards": counters["skipped/unreadable_shard"], "no_audio": counters["no_audio"],
        "empty_caption": counters["empty_caption"], "duration_s": _describe(durations),
        "fps": {str(k): v for k, v in fps_values.items()}, "resolutions": dict(resolutions),
        "buckets": {("x".join(map(str, k)) if isinstance(k, tuple) else k): v for k, v in sorted(
            buckets.items(), key=lambda kv: str(kv[0]))},
        "caption_words": _describe(caption_words),
    }
    if sheet_path is not None and rows:
        report["contact_sheet"] = str(contact_sheet(rows, sheet_path))
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['kind']}: {report['samples']} samples in {report['shards']} shards "
             f"({report['bad']} unreadable samples, {report['unreadable_shards']} unreadable shards, "
             f"{report['no_audio']} without audio, {report['empty_caption']} with an empty caption)"]
    if report["duration_s"]:
        d = report["duration_s"]
        lines.append(f"duration: {d['total']:.1f} s total, {d['min']:.2f} / {d['mean']:.2f} / {d['max']:.2f} s "
                     "min / mean / max")
    for name in ("fps", "resolutions", "buckets"):
        if report[name]:
            lines.append(f"{name}: " + ", ".join(f"{k}: {v}" for k, v in report[name].items()))
    if report.get("contact_sheet"):
        lines.append(f"contact sheet: {report['contact_sheet']}")
    return "\n".join(lines)
