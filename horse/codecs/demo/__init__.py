"""Training-free demo codecs for the CPU shapes-AV demo (see spec.py for every rate and size).

- ``DemoVideoCodec``: exact space-to-depth (1, 4, 4), RGB [B,3,F,H,W] -> [B,48,F,H/4,W/4].
- ``DemoAudioCodec``: mono 2048 Hz waveform -> orthonormal MDCT tokens [B,64,4F+1].
- ``DemoTextEncoder``: frozen WordLevel + tiny random BERT, prompt -> [L,128].
"""

from .audio import DemoAudioCodec, prepare_waveform, resample
from .interface import AudioCodec, TextEncoder, VideoCodec
from .spec import DEMO_CODEC_SPEC, DemoCodecSpec
from .text import DemoTextEncoder
from .video import DemoVideoCodec, frames_to_video, video_to_frames

__all__ = [
    "AudioCodec",
    "DEMO_CODEC_SPEC",
    "DemoAudioCodec",
    "DemoCodecSpec",
    "DemoTextEncoder",
    "DemoVideoCodec",
    "TextEncoder",
    "VideoCodec",
    "frames_to_video",
    "prepare_waveform",
    "resample",
    "video_to_frames",
]
