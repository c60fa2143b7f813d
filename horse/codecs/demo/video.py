"""Pixel-space demo video codec: an exact space-to-depth with stride (1, 4, 4).

``[B, 3, F, H, W]`` RGB in [-1, 1] -> latent ``[B, 48, F, H/4, W/4]``, where latent channel
``rgb * 16 + dy * 4 + dx`` holds pixel ``(4*y + dy, 4*x + dx)`` of colour plane ``rgb``
(channel-major, like the Wan patchify order). Temporal stride 1: latent frame j == video frame j.
H and W must be multiples of 8 so that the DiT's 1x2x2 patchify (48 * 4 = 192 features per
token) tiles the latent exactly. No normalisation: latents are the [-1, 1] pixels themselves.
"""

import numpy as np
import torch
from einops import rearrange

from .spec import DEMO_CODEC_SPEC, DemoCodecSpec

UINT8_MAX = 255.0


class DemoVideoCodec:
    """Exact, training-free video codec (see module docstring). Implements ``interface.VideoCodec``."""

    def __init__(self, spec: DemoCodecSpec = DEMO_CODEC_SPEC):
        self.spec = spec
        self.latent_channels = spec.video_latent_channels
        self.temporal_stride, self.stride_h, self.stride_w = spec.pixel_stride
        self.spatial_stride = self.stride_h

    def _check_size(self, height: int, width: int) -> None:
        m = self.spec.video_size_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise ValueError(
                f"video height and width must be positive multiples of {m} "
                f"(pixel stride {self.stride_h} x DiT patch 2), got {height}x{width}; crop or resize the frames"
            )

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        if frames <= 0:
            raise ValueError(f"the number of frames must be >= 1, got {frames}")
        self._check_size(height, width)
        return (self.latent_channels, frames, height // self.stride_h, width // self.stride_w)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != self.spec.video_channels:
            raise ValueError(
                f"video must be [B, {self.spec.video_channels}, F, H, W] in [-1, 1], got shape {tuple(video.shape)}; "
                "use frames_to_video() for uint8 [F, H, W, 3] frames"
            )
        if not video.is_floating_point():
            raise ValueError(f"video must be a float tensor in [-1, 1], got dtype {video.dtype}; use frames_to_video()")
        self._check_size(video.shape[3], video.shape[4])
        return rearrange(video, "b c f (h dy) (w dx) -> b (c dy dx) f h w", dy=self.stride_h, dx=self.stride_w)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"video latent must be [B, {self.latent_channels}, T, h, w], got shape {tuple(latent.shape)}"
            )
        return rearrange(latent, "b (c dy dx) f h w -> b c f (h dy) (w dx)", dy=self.stride_h, dx=self.stride_w)


def frames_to_video(frames) -> torch.Tensor:
    """uint8 frames ``[F, H, W, 3]`` or ``[B, F, H, W, 3]`` (numpy or torch) -> float32 ``[B, 3, F, H, W]`` in [-1, 1]."""
    frames = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 in [0, 255], got dtype {frames.dtype}")
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] or [B, F, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    video = rearrange(frames, "b f h w c -> b c f h w").to(torch.float32)
    return video / (UINT8_MAX / 2) - 1.0


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float ``[B, 3, F, H, W]`` (or ``[3, F, H, W]``) in [-1, 1] -> uint8 ``[B, F, H, W, 3]`` (or ``[F, H, W, 3]``).

    Values are clamped to [-1, 1] and rounded, so frames_to_video -> video_to_frames is exact.
    """
    unbatched = video.ndim == 4
    if unbatched:
        video = video[None]
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be [B, 3, F, H, W] or [3, F, H, W], got shape {tuple(video.shape)}")
    pixels = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * (UINT8_MAX / 2)).round().to(torch.uint8)
    frames = rearrange(pixels, "b c f h w -> b f h w c")
    return frames[0] if unbatched else frames
