"""In-memory MP4 (H.264 yuv420p + AAC) encode/decode through PyAV.

Timing: video frame i is shown from ``i / fps``; the audio is placed on the same clock. AAC
encoders prepend priming samples (1024 for FFmpeg's encoder). The MP4 muxer records them in an
edit list, and ``decode_mp4`` places every decoded audio frame at its presentation time relative
to the video's first frame and drops whatever lies before it, so a sound at t seconds in the input
decodes at t seconds whichever muxer (edit list or negative pts) wrote the file.

AAC only supports a fixed set of sample rates: other rates (the demo's 2048 Hz) are resampled to
the smallest supported rate >= max(rate, ``MIN_AAC_SAMPLE_RATE``) and ``decode_mp4(sample_rate=...)``
resamples back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

# Rates the AAC bitstream supports (ISO 14496-3 sampling_frequency_index table).
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# Encode low-rate audio at >= this rate so AAC's low-pass stays far above the content's band.
MIN_AAC_SAMPLE_RATE = 16000
# x264 constant rate factor: 0 lossless .. 51 worst; low values keep flat colours of tiny clips intact.
DEFAULT_CRF = 14
DEFAULT_AUDIO_BITRATE = 128_000
DEFAULT_X264_PRESET = "medium"
# Maximum denominator when turning a float fps (29.97...) into an exact rational frame rate.
FPS_MAX_DENOMINATOR = 1001


@dataclass
class DecodedClip:
    frames: np.ndarray           # uint8 [F, H, W, 3] RGB
    audio: np.ndarray | None     # float32 [channels, S] or None when the file has no audio stream
    fps: float
    sample_rate: int | None      # rate of ``audio`` (None without audio)
    duration: float              # F / fps seconds

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def resample_audio(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``[channels, S]`` along time with scipy's delay-compensated polyphase filter
    (onsets keep their time). Output length is ceil(S * target / orig)."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(int(target_rate), int(orig_rate))
    out = resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def aac_encode_rate(sample_rate: int) -> int:
    """The AAC rate a waveform at ``sample_rate`` is stored at (see module docstring)."""
    wanted = max(int(sample_rate), MIN_AAC_SAMPLE_RATE)
    for rate in AAC_SAMPLE_RATES:
        if rate >= wanted:
            return rate
    raise ValueError(f"sample rate {sample_rate} Hz is above AAC's maximum {AAC_SAMPLE_RATES[-1]} Hz")


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be a uint8 numpy array [F, H, W, 3] (RGB), got "
            f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
        )
    f, h, w, _ = frames.shape
    if f == 0:
        raise ValueError("frames is empty: an MP4 needs at least one video frame")
    if h % 2 or w % 2:
        raise ValueError(
            f"H.264 yuv420p needs even height and width, got {h}x{w}; crop or pad the frames to "
            f"{h - h % 2}x{w - w % 2} or {h + h % 2}x{w + w % 2} first"
        )


def encode_mp4(frames: np.ndarray, audio: np.ndarray | None, fps: float, sample_rate: int | None,
               *, crf: int = DEFAULT_CRF, audio_bitrate: int = DEFAULT_AUDIO_BITRATE,
               preset: str = DEFAULT_X264_PRESET) -> bytes:
    """uint8 RGB frames ``[F, H, W, 3]`` (+ float32 audio ``[channels, S]`` in [-1, 1]) -> MP4 bytes."""
    _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rate = Fraction(fps).limit_denominator(FPS_MAX_DENOMINATOR)
    if audio is not None:
        audio = np.asarray(audio)
        if audio.ndim != 2 or audio.shape[0] not in (1, 2) or not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"audio must be float [channels (1 or 2), samples], got {audio.dtype} {audio.shape}")
        if sample_rate is None or sample_rate <= 0:
            raise ValueError(f"audio needs a positive sample_rate, got {sample_rate}")

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        # mbtree off: x264's macroblock-tree rate control is not deterministic on tiny frames, and
        # a dataset must be a deterministic function of its seed
        video.options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
        audio_stream = None
        if audio is not None and audio.shape[1] > 0:
            stored_rate = aac_encode_rate(sample_rate)
            audio = np.clip(resample_audio(audio.astype(np.float32), sample_rate, stored_rate), -1.0, 1.0)
            audio_stream = container.add_stream("aac", rate=stored_rate)
            audio_stream.layout = "mono" if audio.shape[0] == 1 else "stereo"
            audio_stream.bit_rate = audio_bitrate

        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        if audio_stream is not None:
            chunk = audio_stream.codec_context.frame_size or 1024
            layout = audio_stream.layout.name
            for start in range(0, audio.shape[1], chunk):
                piece = np.ascontiguousarray(audio[:, start:start + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = stored_rate, start, Fraction(1, stored_rate)
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))
    return buffer.getvalue()


def _open(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(src)), mode="r")
    if isinstance(src, Path) or (isinstance(src, str) and "://" not in src):
        if not Path(src).is_file():
            raise FileNotFoundError(f"video file {src} does not exist")
    return av.open(str(src), mode="r")


def _frame_seconds(frame, stream) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * (frame.time_base or stream.time_base))


def _audio_array(frame) -> np.ndarray:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: [1, S * channels] interleaved
        data = data.reshape(-1, channels).T
    return data.astype(np.float32, copy=False)


def decode_mp4(src: bytes | str | Path, *, want_audio: bool = True, sample_rate: int | None = None) -> DecodedClip:
    """Decode an MP4 (bytes, local path or a URL FFmpeg can open) to RGB frames and aligned audio.

    The audio starts at the first video frame's time and is cut to the video's duration; it is
    returned at ``sample_rate`` (resampled) or at the file's rate when ``sample_rate`` is None.
    Raises ``ValueError`` when there is no decodable video (``av.error.FFmpegError`` may also escape
    for corrupt data: callers skipping bad samples should catch ``Exception``).
    """
    with _open(src) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if want_audio and container.streams.audio else None
        images, video_start, audio_frames = [], None, []
        for packet in container.demux([s for s in (vstream, astream) if s is not None]):
            for frame in packet.decode():
                if packet.stream is vstream:
                    if video_start is None:
                        video_start = _frame_seconds(frame, vstream) or 0.0
                    images.append(frame.to_ndarray(format="rgb24"))
                else:
                    audio_frames.append((_frame_seconds(frame, astream), _audio_array(frame)))
        if not images:
            raise ValueError("the video stream decoded to no frames (empty or truncated file)")
        rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
        if not rate:
            raise ValueError("cannot tell the video frame rate")
        fps = float(rate)
        duration = len(images) / fps
        audio, audio_rate = None, None
        if astream is not None:
            audio_rate = astream.codec_context.sample_rate or astream.rate
            audio = _place_audio(audio_frames, audio_rate, video_start, duration)
            audio_rate = audio_rate if audio is not None else None
    frames = np.stack(images)
    if audio is not None and sample_rate is not None:
        audio, audio_rate = resample_audio(audio, audio_rate, sample_rate), int(sample_rate)
        audio = audio[:, : int(round(duration * audio_rate))]
    return DecodedClip(frames, audio, fps, audio_rate, duration)


def _place_audio(frames: list[tuple[float | None, np.ndarray]], rate: int, video_start: float,
                 duration: float) -> np.ndarray | None:
    """Decoded audio frames ``(pts seconds, [channels, n])`` -> one waveform on the video clock:
    sample 0 at ``video_start`` (earlier samples, e.g. AAC priming, dropped), gaps filled with
    silence, cut to ``duration``."""
    pieces, cursor = [], 0  # cursor: index (on the video clock) of the next sample to append
    for seconds, data in frames:
        start = cursor if seconds is None else int(round((seconds - video_start) * rate))
        if start < cursor:  # before the video's start, or a rounding overlap: drop those samples
            data = data[:, cursor - start:]
        elif start > cursor:  # a hole in the stream: keep timing with silence
            pieces.append(np.zeros((data.shape[0], start - cursor), np.float32))
            cursor = start
        if data.shape[1]:
            pieces.append(data)
            cursor += data.shape[1]
    if not pieces:
        return None
    audio = np.concatenate(pieces, axis=1)
    return np.ascontiguousarray(audio[:, : int(round(duration * rate))])
