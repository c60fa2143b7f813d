"""The one place that states every rate and channel count of the demo codecs.

Timing convention (shared by video and audio):
- A clip of F video frames at ``video_fps`` lasts F / fps seconds; frame j is shown from j/fps.
- The video codec has temporal stride 1, so latent frame j == video frame j (RoPE time j).
- The audio waveform of such a clip has exactly F * samples_per_video_frame samples at
  ``audio_sample_rate`` = hop * tokens_per_frame * fps (2048 Hz at 8 fps).
- Audio token k is an MDCT frame *centred* on sample k * hop, i.e. at time k / (4 fps), so
  Na = 4F + 1 tokens (k = 0..4F). Under the DiT's v2 audio RoPE (spec 4.5),
  scale = ((Na-1)//4)/(Na-1) = F/(4F) = 1/4 exactly, so token k sits at RoPE time k/4 and a
  sound starting at video frame j starts at token 4j, RoPE time j, the time of video latent j.
"""

import math
from dataclasses import dataclass

# Sine-tone amplitude that the audio latent scale maps to unit RMS latents (see audio_latent_scale).
REFERENCE_TONE_AMPLITUDE = 0.5


@dataclass(frozen=True)
class DemoCodecSpec:
    """Rates and channel counts of the training-free demo codecs (preset ``demo`` of the DiT)."""

    video_fps: int = 8
    video_channels: int = 3  # RGB in [-1, 1]
    pixel_stride: tuple[int, int, int] = (1, 4, 4)  # (t, h, w) space-to-depth stride
    dit_patch_size: tuple[int, int, int] = (1, 2, 2)  # the DiT's patchify, used for size checks
    audio_hop: int = 64  # samples per audio token == MDCT coefficients == audio latent channels
    audio_tokens_per_video_frame: int = 4  # fixed by the v2 audio RoPE (token k at latent time k/4)
    # MDCT coefficients are multiplied by this; the MDCT is orthonormal (Parseval), so a sine of
    # amplitude a gives latent RMS a/sqrt(2)*scale over its tokens: 1.0 for a = REFERENCE_TONE_AMPLITUDE.
    audio_latent_scale: float = math.sqrt(2.0) / REFERENCE_TONE_AMPLITUDE
    text_width: int = 128  # text feature width (DiT text_in_channels)
    text_max_length: int = 64  # text tokens kept per prompt (the encoder still sees the whole prompt)

    def __post_init__(self):
        if self.video_fps <= 0 or self.audio_hop <= 0 or self.audio_tokens_per_video_frame <= 0:
            raise ValueError(f"DemoCodecSpec rates must be positive, got {self}")
        if self.pixel_stride[0] != 1:
            raise ValueError(f"the demo video codec has temporal stride 1, got pixel_stride={self.pixel_stride}")
        if self.audio_latent_scale <= 0:
            raise ValueError(f"audio_latent_scale must be > 0, got {self.audio_latent_scale}")

    # ---- video -----------------------------------------------------------------------------
    @property
    def video_latent_channels(self) -> int:
        """3 * 4 * 4 = 48 (channel index = rgb*16 + dy*4 + dx, see video.py)."""
        return self.video_channels * self.pixel_stride[1] * self.pixel_stride[2]

    @property
    def dit_video_in_channels(self) -> int:
        """Features per DiT video token after its 1x2x2 patchify: 48 * 4 = 192."""
        return self.video_latent_channels * math.prod(self.dit_patch_size)

    @property
    def video_size_multiple(self) -> int:
        """H and W must be multiples of this (pixel stride * DiT patch = 8)."""
        return self.pixel_stride[1] * self.dit_patch_size[1]

    # ---- audio -----------------------------------------------------------------------------
    @property
    def audio_samples_per_video_frame(self) -> int:
        return self.audio_hop * self.audio_tokens_per_video_frame

    @property
    def audio_sample_rate(self) -> int:
        """hop * tokens_per_frame * fps = 64 * 4 * 8 = 2048 Hz (Nyquist 1024 Hz)."""
        return self.audio_samples_per_video_frame * self.video_fps

    @property
    def audio_latent_channels(self) -> int:
        return self.audio_hop

    def audio_num_samples(self, num_video_frames: int) -> int:
        """Waveform length for F video frames: F * hop * tokens_per_frame (F / fps seconds)."""
        return num_video_frames * self.audio_samples_per_video_frame

    def audio_num_tokens(self, num_video_frames: int) -> int:
        """Audio tokens for F video frames: Na = 4F + 1 (see the module docstring)."""
        return num_video_frames * self.audio_tokens_per_video_frame + 1


DEMO_CODEC_SPEC = DemoCodecSpec()
