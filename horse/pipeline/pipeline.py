"""Prompt (+ optional image, optional reference audio, or a video to add sound to) -> latents -> frames +
waveform -> MP4.

Stages: text features (cached) -> starting noise (seeded) -> sampler over the DiT (CFG as one packed forward)
-> with ``audio_after_video``, a second pass that samples the audio again with the finished video held clean
-> codec decoding at the model's native fps -> retiming to the requested fps (sample-and-hold, see
``horse.pipeline.media``) and audio resampling for AAC -> MP4 (H.264 + AAC).

Randomness: one CPU ``torch.Generator`` seeded with ``seed`` draws all noise (audio noise first, then video,
then the distilled sampler's per-step noise, then the second pass's audio noise and per-step noise), so a seed
gives the same latents on any device.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from horse.checkpoint_folder import CheckpointConfig, SamplerDefaults, load_checkpoint_folder
from horse.diffusion.samplers import initial_noise, randn, sample_distilled, sample_euler, sample_unipc
from horse.model.packing import check_video_width
from horse.pipeline.codecs import ClipLayout, load_codecs
from horse.data.av_io import aac_encode_rate, encode_mp4
from horse.pipeline.media import fit_audio, read_audio, read_image, read_video, retime_indices, write_file_atomic
from horse.pipeline.velocity import Guidance, make_velocity_fn

SEED_RANGE = 2**31  # seeds chosen when none is given lie in [0, SEED_RANGE)
DURATION_TOLERANCE = 1e-6  # seconds of slack when checking a duration against the declared range


@dataclass
class GenerationResult:
    path: Path | None
    metadata: dict
    latents: dict | None = None  # {"video": [1, C, T, h, w], "audio": [1, Na, Ca]} with return_latents=True
    frames: np.ndarray | None = field(default=None, repr=False)  # uint8 [F, H, W, 3] at the requested fps
    audio: np.ndarray | None = field(default=None, repr=False)   # float32 [channels, S] at metadata sample_rate


class Pipeline:
    """A loaded checkpoint folder (DiT + codecs) that generates clips; see ``generate``."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu"):
        start = time.perf_counter()
        config, model = load_checkpoint_folder(Path(checkpoint), torch.device(device))
        self._attach(config, model, Path(checkpoint), device)
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def from_parts(cls, config: CheckpointConfig, model, root: str | Path = ".",
                   device: str | torch.device = "cpu") -> "Pipeline":
        """A pipeline over an in-memory model (e.g. a trainer's validation, with EMA weights swapped in)."""
        self = cls.__new__(cls)
        start = time.perf_counter()
        self._attach(config, model, Path(root), device)
        self.load_seconds = time.perf_counter() - start
        return self

    def _attach(self, config, model, root: Path, device) -> None:
        self.root, self.device = root, torch.device(device)
        self.config, self.model = config, model
        self.codecs = load_codecs(self.config, self.root, self.device)
        dit = self.model.config
        if self.codecs.text.feature_dim != dit.text_in_channels:
            raise ValueError(f"the text encoder gives {self.codecs.text.feature_dim}-wide features but the DiT reads "
                             f"text_in_channels={dit.text_in_channels}")
        if self.codecs.audio.latent_channels != dit.audio_in_channels:
            raise ValueError(f"the audio codec gives {self.codecs.audio.latent_channels} channels but the DiT reads "
                             f"audio_in_channels={dit.audio_in_channels}")
        check_video_width(self.codecs.video.latent_channels, dit.video_patch, dit.video_in_channels,
                          dit.video_context_frames)

    # ---- input checks ----------------------------------------------------------------------
    def _resolution(self, resolution) -> tuple[str, int, int]:
        """A declared resolution by name, ``"HxW"`` or ``[H, W]`` -> (name, H, W)."""
        declared = self.config.resolutions
        if resolution is None:
            resolution = self.config.default_resolution
        if isinstance(resolution, str) and resolution in declared:
            return resolution, *declared[resolution]
        wanted = resolution
        if isinstance(resolution, str):
            parts = resolution.lower().split("x")
            wanted = [int(p) for p in parts] if len(parts) == 2 and all(p.isdigit() for p in parts) else None
        for name, hw in declared.items():
            if isinstance(wanted, (list, tuple)) and list(wanted) == list(hw):
                return name, *hw
        offered = ", ".join(f"{n} ({h}x{w})" for n, (h, w) in declared.items())
        raise ValueError(f"resolution {resolution!r} is not offered by this checkpoint; choose one of {offered}")

    def _check(self, prompt, duration, fps) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty; describe the clip to generate")
        lo, hi = self.config.durations
        if not lo - DURATION_TOLERANCE <= duration <= hi + DURATION_TOLERANCE:
            raise ValueError(f"duration {duration} s is outside what this checkpoint supports ({lo}..{hi} s)")
        if fps not in self.config.fps_options:
            raise ValueError(f"fps {fps} is not offered by this checkpoint; choose one of {self.config.fps_options}")

    # ---- generation ------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompt: str, output: str | Path | None = None, *, image: str | Path | None = None,
                 audio: str | Path | None = None, video: str | Path | None = None,
                 duration: float | None = None, fps: float | None = None,
                 resolution: str | list | None = None, seed: int | None = None, sampler: str | None = None,
                 steps: int | None = None, shift: float | None = None, video_guidance: float | None = None,
                 audio_guidance: float | None = None, late_video_guidance: float | None | str = "default",
                 negative_prompt: str | None = None, motion_strength: float | None = None,
                 audio_after_video: bool | None = None,
                 progress: bool = False, progress_callback: Callable[[float], None] | None = None,
                 return_latents: bool = False) -> GenerationResult:
        """Generate one clip; writes an MP4 to ``output`` when given.

        Unset settings take the checkpoint's defaults: the shortest duration, the native fps (else the first fps
        option), the default resolution and the sampler defaults; ``late_video_guidance=None`` turns the late
        switch off. ``video`` adds sound to a video (V2A): its frames, fitted to the resolution and retimed to the
        native fps, are held clean while only the audio is sampled; the duration then defaults to the video's
        (within the checkpoint's range). ``seed=None`` picks a random seed, reported in the metadata. The duration
        is rounded to whole native frames (the metadata holds the exact one). ``motion_strength`` in [0, 1] appends
        the checkpoint's motion phrase to the prompt. ``audio_after_video`` (default: the checkpoint's) samples the
        audio a second time from the finished video (ignored with reference audio). ``progress_callback(fraction)``
        is called after every step with 0..1.
        """
        cfg, timings = self.config, {}
        if video is not None and (image is not None or audio is not None):
            raise ValueError("a video to add sound to (V2A) is the whole picture: give it without an image or "
                             "reference audio")
        res_name, height, width = self._resolution(resolution)
        source = read_video(video, height, width) if video is not None else None
        if duration is None:
            duration = cfg.durations[0] if source is None else min(len(source[0]) / source[1], cfg.durations[1])
        duration = float(duration)
        if fps is None:
            fps = cfg.native_fps if cfg.native_fps in cfg.fps_options else cfg.fps_options[0]
        self._check(prompt, duration, fps)
        defaults = cfg.sampler
        sampler_settings = {"name": sampler or defaults.name, "steps": defaults.steps if steps is None else steps,
                            "shift": defaults.shift if shift is None else shift,
                            "audio_after_video": (defaults.audio_after_video if audio_after_video is None
                                                  else audio_after_video)}
        guidance = Guidance(
            video=defaults.video_guidance if video_guidance is None else video_guidance,
            audio=defaults.audio_guidance if audio_guidance is None else audio_guidance,
            late_video=defaults.late_video_guidance if late_video_guidance == "default" else late_video_guidance,
            switch_timestep=defaults.switch_timestep)
        SamplerDefaults(**sampler_settings).validate()
        # reference audio is kept, never re-sampled; with a given video the audio pass is the only one
        sampler_settings["audio_after_video"] &= audio is None and video is None
        full_prompt = prompt if motion_strength is None else f"{prompt.rstrip()} {cfg.motion_phrase(motion_strength)}"
        seed = random.SystemRandom().randrange(SEED_RANGE) if seed is None else int(seed)
        layout = self.codecs.layout(duration, height, width)
        frames_per_token = self.model.config.video_patch[0]
        if layout.video_latent[1] % frames_per_token:
            raise ValueError(f"duration {duration} s makes {layout.video_latent[1]} latent frames, but this model's "
                             f"video tokens hold {frames_per_token} each: choose a duration whose latent frames are a "
                             f"multiple of {frames_per_token}")
        image_pixels = read_image(image, height, width) if image is not None else None
        video_frames = self._native_frames(video, *source, layout.num_frames) if source is not None else None
        ref_audio = read_audio(audio) if audio is not None else None

        t = time.perf_counter()
        text = self.codecs.encode_text(full_prompt)
        negative = negative_prompt if negative_prompt is not None else cfg.negative_prompt
        negative_text = self.codecs.encode_text(negative or cfg.null_text) if guidance.active else None
        frame0 = self.codecs.encode_image(image_pixels) if image_pixels is not None else None
        audio_ref = self.codecs.encode_audio(*ref_audio, layout) if ref_audio is not None else None
        video_ref = self.codecs.encode_video(video_frames) if video_frames is not None else None
        timings["encode"] = time.perf_counter() - t

        t = time.perf_counter()
        video_lat, audio_lat = self._sample(text, negative_text, guidance, layout, seed, sampler_settings, frame0,
                                            audio_ref, video_ref, progress, progress_callback)
        timings["sample"] = time.perf_counter() - t

        t = time.perf_counter()
        native = self.codecs.decode_video(video_lat.float())
        wave, rate = self.codecs.decode_audio(audio_lat.float())
        num_out = max(1, round(layout.duration * fps))
        frames = native[retime_indices(len(native), cfg.native_fps, fps, num_out)]
        wave = fit_audio(wave, rate, num_out / fps)
        timings["decode"] = time.perf_counter() - t

        path = None
        if output is not None:
            t = time.perf_counter()
            path = write_file_atomic(output, encode_mp4(frames, wave, fps, rate))
            timings["write"] = time.perf_counter() - t
        metadata = {
            "prompt": prompt, "text": full_prompt, "negative_prompt": negative, "seed": seed,
            "sampler": sampler_settings["name"], "steps": sampler_settings["steps"], "shift": sampler_settings["shift"],
            "audio_after_video": sampler_settings["audio_after_video"],
            "guidance": {"video": guidance.video, "audio": guidance.audio, "late_video": guidance.late_video,
                         "switch_timestep": guidance.switch_timestep, "active": guidance.active},
            "duration": num_out / fps, "fps": fps, "native_fps": cfg.native_fps, "num_frames": num_out,
            "resolution": {"name": res_name, "height": height, "width": width},
            "mode": "v2a" if video is not None else "ti2v" if image is not None else "t2v",
            "reference_audio": audio is not None,
            "motion_strength": motion_strength, "sample_rate": rate, "mp4_sample_rate": aac_encode_rate(rate),
            "timings": {"load": self.load_seconds, **timings},
        }
        latents = {"video": video_lat.cpu(), "audio": audio_lat.cpu()} if return_latents else None
        return GenerationResult(path, metadata, latents, frames, wave)

    def _native_frames(self, path, frames: np.ndarray, source_fps: float, num_frames: int) -> np.ndarray:
        """The source frames on screen at the native frame times (sample-and-hold), checked to cover the clip."""
        native = self.config.native_fps
        last = (num_frames - 1) / native
        if last >= len(frames) / source_fps + DURATION_TOLERANCE:
            raise ValueError(f"video {path} lasts {len(frames) / source_fps:.3f} s but the clip needs frames up to "
                             f"{last:.3f} s: ask for a shorter duration")
        return frames[retime_indices(len(frames), source_fps, native, num_frames)]

    def _sample(self, text, negative_text, guidance: Guidance, layout: ClipLayout, seed: int, settings: dict,
                frame0, audio_ref, video_ref, progress: bool, progress_callback):
        from tqdm import tqdm

        generator = torch.Generator("cpu").manual_seed(seed)
        video_shape = (1, *layout.video_latent)
        audio_shape = None if audio_ref is not None else (1, layout.num_audio, layout.audio_channels)
        correlation = self.config.video_frame_correlation
        video, audio = initial_noise(video_shape, audio_shape, generator, device=self.device,
                                     video_frame_correlation=correlation)
        hold = None
        if audio_ref is not None:
            audio, hold = audio_ref.to(self.device), 0.0  # clean reference audio, never stepped
        velocity = make_velocity_fn(self.model, text, negative_text, guidance, coords_style=self.config.coords_style)
        passes = 2 if settings["audio_after_video"] else 1
        total_steps = passes * settings["steps"]
        bar = tqdm(total=total_steps, desc="sampling", unit="step", file=sys.stderr, disable=not progress)
        done = 0

        def callback(step: int, total: int) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if progress_callback is not None:
                progress_callback(done / total_steps)

        def run(video, audio, **kwargs):
            kwargs = dict(num_steps=settings["steps"], shift=settings["shift"], callback=callback, **kwargs)
            if settings["name"] == "unipc":
                return sample_unipc(velocity, video, audio, **kwargs)
            if settings["name"] == "euler":
                return sample_euler(velocity, video, audio, **kwargs)
            return sample_distilled(velocity, video, audio, generator, video_frame_correlation=correlation, **kwargs)

        try:
            if video_ref is not None:  # V2A: the given video held clean, only the audio sampled
                return run(video_ref.to(self.device), audio, hold_video=0.0)
            video, audio = run(video, audio, hold_audio=hold,
                               video_frame0=None if frame0 is None else frame0.to(self.device))
            if settings["audio_after_video"]:  # video-to-audio: fresh audio noise beside the finished video
                audio = randn(tuple(audio.shape), generator, self.device, audio.dtype)
                video, audio = run(video, audio, hold_video=0.0)
            return video, audio
        finally:
            bar.close()


def generate(checkpoint: str | Path, prompt: str, output: str | Path | None = None, *,
             device: str | torch.device = "cpu", **kwargs) -> GenerationResult:
    """Load ``checkpoint`` and generate one clip (see ``Pipeline.generate`` for the settings)."""
    return Pipeline(checkpoint, device).generate(prompt, output, **kwargs)


__all__ = ["GenerationResult", "Pipeline", "generate"]
