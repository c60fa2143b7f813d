"""The codec bundle a checkpoint declares: clip layout (latent sizes), text features, image and reference-audio
latents, and decoding back to uint8 frames and a waveform.

Two families, chosen by ``config.codecs`` (video and audio must be of the same family, text may be either):
- demo (``DEMO_CODEC_SPEC``): S seconds at 8 fps -> F = S*8 frames, video latent ``[48, F, H/4, W/4]``,
  Na = 4F + 1 audio tokens of 64; audio decodes at 2048 Hz.
- release (Wan2.2 + Stable Audio Open, spec 4.2-4.3): F = S*25 + 1 pixel frames, latent T = (F-1)//4 + 1,
  ``[48, T, H/16, W/16]``, Na = F; audio decodes at 51.2 kHz and is read back at 44.1 kHz.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from horse.checkpoint_folder import CheckpointConfig

TEXT_CACHE_SIZE = 32  # prompts whose features are kept in-process (the negative prompt is reused every call)
RELEASE_FPS = 25
RELEASE_TEMPORAL_STRIDE = 4


@dataclass(frozen=True)
class ClipLayout:
    """Sizes of one generated clip at the model's native frame rate."""

    num_frames: int                            # pixel frames the video codec decodes
    video_latent: tuple[int, int, int, int]    # (C, T, h, w)
    num_audio: int                             # audio tokens Na
    audio_channels: int                        # Ca
    duration: float                            # seconds the clip covers


class CodecBundle:
    """Video, audio and text codecs of one checkpoint (build with ``load_codecs``)."""

    def __init__(self, family: str, video, audio, text, native_fps: float):
        self.family, self.video, self.audio, self.text = family, video, audio, text
        self.native_fps = native_fps
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # ---- sizes -----------------------------------------------------------------------------
    def layout(self, duration: float, height: int, width: int) -> ClipLayout:
        if self.family == "demo":
            frames = max(1, round(duration * self.native_fps))
            shape = self.video.latent_shape(frames, height, width)
            return ClipLayout(frames, shape, self.video.spec.audio_num_tokens(frames),
                              self.audio.latent_channels, frames / self.native_fps)
        steps = max(1, round(duration * self.native_fps))  # F - 1 frame intervals
        stride = self.video.spatial_stride
        if height % stride or width % stride:
            raise ValueError(f"resolution {height}x{width} must be a multiple of {stride} for the Wan2.2 VAE")
        latent_t = steps // RELEASE_TEMPORAL_STRIDE + 1
        shape = (self.video.latent_channels, latent_t, height // stride, width // stride)
        return ClipLayout((latent_t - 1) * RELEASE_TEMPORAL_STRIDE + 1, shape, steps + 1,
                          self.audio.latent_channels, steps / self.native_fps)

    # ---- conditioning ----------------------------------------------------------------------
    def encode_text(self, prompt: str) -> torch.Tensor:
        """``[L, D]`` fp32 features, cached per prompt."""
        if prompt in self._text_cache:
            self._text_cache.move_to_end(prompt)
            return self._text_cache[prompt]
        features = self.text.encode(prompt).float().cpu()
        self._text_cache[prompt] = features
        if len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return features

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` (already at the clip size) -> one latent frame ``[1, C, 1, h, w]``."""
        return self.encode_video(image[None])

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[F, H, W, 3]`` at the native fps and clip size -> latent ``[1, C, T, h, w]``."""
        from horse.codecs.demo import frames_to_video

        return self.video.encode(frames_to_video(frames)).float().cpu()

    def encode_audio(self, waveform: np.ndarray, sample_rate: int, layout: ClipLayout) -> torch.Tensor:
        """Reference audio ``[channels, S]`` -> clean latent ``[1, Na, Ca]``, cut or zero-padded to the clip."""
        wave = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        if self.family == "demo":
            from horse.codecs.demo import prepare_waveform

            latent = self.audio.encode(prepare_waveform(wave[None], sample_rate, layout.num_frames))
        else:
            from horse.codecs.stable_audio import prepare_waveform

            # The posterior mean (deterministic); the release samples the posterior here.
            latent = self.audio.encode(prepare_waveform(wave, sample_rate)).mean.float()
        tokens = latent.transpose(1, 2)[:, :layout.num_audio]
        pad = layout.num_audio - tokens.shape[1]
        return torch.nn.functional.pad(tokens, (0, 0, 0, pad)).cpu() if pad > 0 else tokens.cpu()

    # ---- decoding --------------------------------------------------------------------------
    def decode_video(self, latent: torch.Tensor) -> np.ndarray:
        """``[1, C, T, h, w]`` -> uint8 frames ``[F, H, W, 3]`` at the native frame rate."""
        from horse.codecs.demo import video_to_frames

        pixels = self.video.decode(latent)
        return video_to_frames(pixels.float().cpu())[0].numpy()

    def decode_audio(self, tokens: torch.Tensor) -> tuple[np.ndarray, int]:
        """``[1, Na, Ca]`` -> (float32 ``[channels, S]``, its sample rate)."""
        wave = self.audio.decode(tokens.transpose(1, 2))[0].float().cpu()
        if self.family == "demo":
            return wave.numpy(), self.audio.sample_rate
        from horse.codecs.stable_audio import OUTPUT_SAMPLE_RATE, to_output_rate

        return to_output_rate(wave), OUTPUT_SAMPLE_RATE


def load_codecs(config: CheckpointConfig, root: Path, device: str | torch.device = "cpu") -> CodecBundle:
    """Build the codecs ``config.codecs`` names (paths relative to the checkpoint folder ``root``)."""
    spec = config.codecs
    video_type, audio_type, text_type = spec["video"]["type"], spec["audio"]["type"], spec["text"]["type"]
    if (video_type == "demo") != (audio_type == "demo"):
        raise ValueError(f"codecs.video {video_type!r} and codecs.audio {audio_type!r} do not fit together: use "
                         "demo for both, or wan2.2 with stable_audio_open")

    def path(part: str) -> Path | None:
        p = spec[part].get("path")
        return None if p is None else config.resolve(root, p)

    for part in ("video", "audio", "text"):
        p = path(part)
        if p is not None and not p.exists():
            raise FileNotFoundError(f"codecs.{part} path {p} does not exist")
    if video_type == "demo":
        from horse.codecs.demo import DEMO_CODEC_SPEC, DemoAudioCodec, DemoVideoCodec

        if config.native_fps != DEMO_CODEC_SPEC.video_fps:
            raise ValueError(f"native_fps {config.native_fps} does not match the demo codecs' "
                             f"{DEMO_CODEC_SPEC.video_fps} fps")
        video, audio, family = DemoVideoCodec(), DemoAudioCodec(), "demo"
    else:
        from horse.codecs.stable_audio import StableAudioCodec
        from horse.codecs.wan_video import WanVideoCodec

        if config.native_fps != RELEASE_FPS:
            raise ValueError(f"native_fps {config.native_fps} does not match the Wan2.2 / Stable Audio "
                             f"{RELEASE_FPS} fps")
        video = WanVideoCodec.from_pth(path("video"), device=device)
        audio, family = StableAudioCodec.from_pretrained(path("audio"), device=device), "release"
    if text_type == "demo":
        from horse.codecs.demo import DemoTextEncoder

        text = DemoTextEncoder.load(path("text"))
    else:
        from horse.codecs.t5gemma_text import T5GemmaTextEncoder

        text = T5GemmaTextEncoder.from_pretrained(path("text"), device=device)
    return CodecBundle(family, video, audio, text, config.native_fps)
