"""Speed suite: per-stage latency and peak memory of generation, in the shape of the release's table
(rows resolution; columns base / SR / decode / total seconds; spec section 8: 5 s clip, one H100, distilled).

Stages, timed one after the other with ``horse.pipeline`` internals (device synchronised around each):
``text`` (prompt + negative prompt features), ``base`` (the sampler over the base DiT), ``sr`` (latent
super-resolution with a second checkpoint, ``horse.diffusion.super_resolution``; "n/a" when the row names no
``sr_checkpoint``), ``decode`` (video and audio codecs, retiming) and ``mux`` (MP4 encode + write).
``total`` is their sum (checkpoint loading is reported apart, as ``load``).

Peak memory per stage: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on CPU the
process's peak resident set (VmHWM in /proc/self/status), reset before each stage by writing 5 to
/proc/self/clear_refs (Linux >= 4.0). Where that reset is refused, the stage's value is the process peak so far
and the row says ``"memory": "process peak (not reset per stage)"``.

Suite config (``configs/eval/suite/speed.yaml``): ``rows`` (each: name, checkpoint (null: the one under
evaluation; ``"tiny:<resolution>"``: a random demo-codec checkpoint with a 2-layer DiT at that HxW, written
under the output folder, stated in the row), resolution, duration, fps, sampler, steps, sr_checkpoint,
sr_resolution), ``repeats`` (timed runs per row after ``warmup`` untimed ones), ``prompt``; per-size overrides
under ``sizes`` (see the prompts suite).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from eval.suites.prompts import suite_settings

STAGES = ("text", "base", "sr", "decode", "mux")
TABLE_COLUMNS = ("base", "sr", "decode", "total")
DEFAULT_PROMPT = "A woman looks into the camera and says hello."
TINY_MODEL = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0]}
RELEASE_TABLE = {  # seconds, spec section 8 (README): 5 s clip, one H100, distilled model, compiled, Turbo VAE
    "256p": {"base": 1.6, "sr": None, "decode": 0.4, "total": 2.0},
    "540p": {"base": 1.6, "sr": 5.1, "decode": 1.3, "total": 8.0},
    "1080p": {"base": 1.6, "sr": 31.0, "decode": 5.8, "total": 38.4},
}
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def _vm_hwm_bytes() -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_cpu_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Wall time and peak memory of named stages on one device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_bytes: dict[str, int] = {}
        self.peak_reset = True

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_reset &= _reset_cpu_peak()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] = time.perf_counter() - start
        self.peak_bytes[name] = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda"
                                 else _vm_hwm_bytes())


def tiny_checkpoint(out_dir: Path, resolution: list[int]) -> Path:
    """A random demo-codec checkpoint (2-layer demo DiT) declaring ``resolution`` (HxW), for CPU-sized rows."""
    from horse.pipeline import init_checkpoint

    h, w = (int(v) for v in resolution)
    path = out_dir / f"tiny_{h}x{w}"
    if (path / "config.json").is_file():
        return path
    return init_checkpoint(path, seed=0, model=TINY_MODEL, resolutions={f"{h}x{w}": [h, w]},
                           default_resolution=f"{h}x{w}")


def time_generation(pipe, prompt: str, out_path: Path, *, duration=None, fps=None, resolution=None, sampler=None,
                    steps=None, seed: int = 0, sr_pipe=None, sr_resolution=None, sr_steps=None) -> dict:
    """One generation stage by stage (no guidance switch-off, no image/audio conditioning)."""
    from horse.data.av_io import encode_mp4
    from horse.diffusion.super_resolution import sample_super_resolution
    from horse.pipeline.media import fit_audio, retime_indices, write_file_atomic
    from horse.pipeline.velocity import Guidance, make_velocity_fn

    cfg, meter = pipe.config, StageMeter(pipe.device)
    duration = float(cfg.durations[0] if duration is None else duration)
    fps = fps or (cfg.native_fps if cfg.native_fps in cfg.fps_options else cfg.fps_options[0])
    res_name, height, width = pipe._resolution(resolution)
    d = cfg.sampler
    settings = {"name": sampler or d.name, "steps": steps or d.steps, "shift": d.shift,
                "audio_after_video": d.audio_after_video}  # the checkpoint's generation, second audio pass included
    guidance = Guidance(d.video_guidance, d.audio_guidance, d.late_video_guidance, d.switch_timestep)
    layout = pipe.codecs.layout(duration, height, width)
    with torch.inference_mode():
        with meter.stage("text"):
            text = pipe.codecs.encode_text(prompt)
            negative = pipe.codecs.encode_text(cfg.negative_prompt or cfg.null_text) if guidance.active else None
        with meter.stage("base"):
            video, audio = pipe._sample(text, negative, guidance, layout, seed, settings, frame0=None, audio_ref=None,
                                        video_ref=None, progress=False, progress_callback=None)
        if sr_pipe is not None:
            _, sr_h, sr_w = sr_pipe._resolution(sr_resolution)
            sr_layout = sr_pipe.codecs.layout(duration, sr_h, sr_w)
            with meter.stage("sr"):
                velocity = make_velocity_fn(sr_pipe.model, text.to(sr_pipe.device), None, None,
                                            coords_style=sr_pipe.config.coords_style)
                video, audio = sample_super_resolution(
                    velocity, video.to(sr_pipe.device), audio.to(sr_pipe.device), sr_layout.video_latent[2:],
                    torch.Generator("cpu").manual_seed(seed), **({"num_steps": sr_steps} if sr_steps else {}),
                    video_frame_correlation=sr_pipe.config.video_frame_correlation)
            decoder = sr_pipe
        else:
            decoder = pipe
        with meter.stage("decode"):
            native = decoder.codecs.decode_video(video.float())
            wave, rate = decoder.codecs.decode_audio(audio.float())
            num_out = max(1, round(layout.duration * fps))
            frames = native[retime_indices(len(native), cfg.native_fps, fps, num_out)]
            wave = fit_audio(wave, rate, num_out / fps)
        with meter.stage("mux"):
            write_file_atomic(out_path, encode_mp4(frames, wave, fps, rate))
    seconds = {s: meter.seconds.get(s) for s in STAGES}
    return {"seconds": seconds, "total": sum(v for v in seconds.values() if v is not None),
            "peak_bytes": {s: meter.peak_bytes.get(s) for s in STAGES}, "peak_reset": meter.peak_reset,
            "resolution": {"name": res_name, "height": height, "width": width}, "duration": layout.duration,
            "fps": fps, "sampler": settings, "frames": int(frames.shape[0])}


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def markdown_table(rows: list[dict], device: str) -> str:
    """The release-shaped table (median seconds) plus text/mux and peak memory, then the release's numbers."""
    def cell(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"Device: {device}. Seconds per stage (median of repeats); peak memory in MiB.", "",
             "| row | resolution | duration s | base | SR | decode | total | text | mux | peak MiB | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, peak = r["median"], r["peak_mib"]
        lines.append(f"| {r['name']} | {r['resolution']} | {r['duration']:.2f} | {cell(m['base'])} | {cell(m['sr'])} | "
                     f"{cell(m['decode'])} | {cell(m['total'])} | {cell(m['text'])} | {cell(m['mux'])} | "
                     f"{cell(peak)} | {r['note']} |")
    lines += ["", "Release (spec section 8; 5 s clip, one H100, distilled, compiled, Turbo VAE):", "",
              "| resolution | base | SR | decode | total |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {cell(v['base'])} | {cell(v['sr'])} | {cell(v['decode'])} | {cell(v['total'])} |"
              for name, v in RELEASE_TABLE.items()]
    return "\n".join(lines) + "\n"


def run(cfg, context) -> dict:
    from horse.pipeline import Pipeline

    settings = suite_settings(cfg)
    out_dir = Path(context.out_dir)
    device = torch.device(context.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no GPU; run with device=cpu")
    prompt = settings.get("prompt") or DEFAULT_PROMPT
    repeats, warmup = int(settings.get("repeats", 1)), int(settings.get("warmup", 0))
    if repeats < 1 or warmup < 0:
        raise ValueError(f"speed suite needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    rows, clips, cache = [], [], {}

    def load(spec):
        if spec is None:
            return None
        if isinstance(spec, str) and spec.startswith("tiny:"):
            h, w = spec.split(":", 1)[1].lower().split("x")
            spec = tiny_checkpoint(out_dir / "checkpoints", [h, w])
        key = str(spec)
        if key not in cache:
            start = time.perf_counter()
            cache[key] = (Pipeline(spec, device), time.perf_counter() - start)
        return cache[key]

    for row in settings.get("rows") or []:
        name = row["name"]
        spec = row.get("checkpoint") or context.checkpoint
        pipe, load_s = load(spec)
        sr = load(row.get("sr_checkpoint"))
        kwargs = {k: row.get(k) for k in ("duration", "fps", "resolution", "sampler", "steps")}
        sr_kwargs = {"sr_pipe": sr[0] if sr else None, "sr_resolution": row.get("sr_resolution"),
                     "sr_steps": row.get("sr_steps")}
        runs = []
        for i in range(warmup + repeats):
            path = out_dir / "clips" / f"{name}_{i}.mp4"
            result = time_generation(pipe, prompt, path, seed=i, **kwargs, **sr_kwargs)
            if i >= warmup:
                runs.append(result)
                clips.append({"id": f"{name}/{i - warmup}", "group": name, "prompt": prompt,
                              "video": str(path.relative_to(out_dir)), "reference": None, "detected": {},
                              "scores": {**{f"{s}_s": result["seconds"][s] for s in STAGES},
                                         "total_s": result["total"]}})
            else:
                path.unlink(missing_ok=True)
        median = {s: _median(r["seconds"][s] for r in runs) for s in STAGES}
        median["total"] = _median(r["total"] for r in runs)
        peak = max((b for r in runs for b in r["peak_bytes"].values() if b is not None), default=None)
        res = runs[0]["resolution"]
        note = "tiny random 2-layer DiT + demo codecs" if str(spec).startswith("tiny:") else ""
        if not all(r["peak_reset"] for r in runs):
            note = (note + "; " if note else "") + "memory: process peak (not reset per stage)"
        rows.append({"name": name, "checkpoint": str(pipe.root), "resolution": f"{res['height']}x{res['width']}",
                     "duration": runs[0]["duration"], "fps": runs[0]["fps"], "sampler": runs[0]["sampler"],
                     "sr_checkpoint": str(sr[0].root) if sr else None, "load_s": load_s, "median": median,
                     "peak_mib": None if peak is None else peak / 2**20, "repeats": len(runs),
                     "runs": [{"seconds": r["seconds"], "total": r["total"], "peak_bytes": r["peak_bytes"]}
                              for r in runs], "note": note})
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    table = {"device": device_name, "columns": list(TABLE_COLUMNS), "rows": rows, "release": RELEASE_TABLE}
    (out_dir / "speed.json").write_text(json.dumps(table, indent=2))
    (out_dir / "speed.md").write_text(markdown_table(rows, device_name))
    from horse.metrics.stats import ScoreSpec, summarise_scores

    specs = {f"{s}_s": ScoreSpec("mean", (f"{s}_s",), higher_is_better=False, description=f"{s} stage seconds")
             for s in (*STAGES, "total")}
    groups = {}
    for row in rows:
        members = [c["scores"] for c in clips if c["group"] == row["name"]]
        usable = {k: v for k, v in specs.items() if all(m.get(k) is not None for m in members)}
        groups[row["name"]] = {"n": len(members), "scores": summarise_scores(members, usable)}
    return {"settings": {"device": device_name, "prompt": prompt, "repeats": repeats, "warmup": warmup,
                         "table": "speed.md", "table_json": "speed.json"},
            "groups": groups, "clips": clips, "timings": {"rows": {r["name"]: r["median"]["total"] for r in rows}},
            "table": table}


__all__ = ["RELEASE_TABLE", "StageMeter", "markdown_table", "run", "time_generation", "tiny_checkpoint"]
