"""Media in and out of the pipeline: reading the conditioning image, video (V2A) and reference audio, retiming
the native frame rate to the requested one, and writing the MP4 (``horse.data.av_io.encode_mp4``: H.264 + AAC, audio
resampled to an AAC rate of at least 16 kHz, e.g. the demo's 2048 Hz -> 16 kHz, Stable Audio's 44.1 kHz kept).

Frame-rate retiming is sample-and-hold: output frame j (shown at time j / fps) repeats the native frame on screen
at that time, ``floor(j * native_fps / fps)``. 8 -> 24 fps shows every native frame 3 times; 8 -> 30 fps
alternates 3 and 4 repeats. Nothing is interpolated, so motion stays exactly what the model generated.
"""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS_MAX_DENOMINATOR = 1001  # NTSC-style rates such as 30000/1001 stay exact


def read_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """An image file -> uint8 ``[height, width, 3]``: centre-cropped to the clip's aspect ratio, then resized."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return fit_frame(rgb, height, width)  # a writable copy (torch refuses read-only arrays)


def fit_frame(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[h, w, 3]`` -> ``[height, width, 3]``: centre-cropped to the clip's aspect ratio, then resized."""
    from PIL import Image, ImageOps

    if rgb.shape[:2] == (height, width):
        return np.array(rgb, dtype=np.uint8)
    fitted = ImageOps.fit(Image.fromarray(rgb), (width, height), method=Image.Resampling.BICUBIC)
    return np.array(fitted, dtype=np.uint8)


def read_video(path: str | Path, height: int, width: int) -> tuple[np.ndarray, float]:
    """The first video stream of a media file -> (uint8 ``[F, height, width, 3]`` fitted like ``read_image``, fps)."""
    import av

    from horse.data.av_io import decode_mp4

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    try:
        clip = decode_mp4(path, want_audio=False)
    except (av.FFmpegError, ValueError) as err:
        raise ValueError(f"cannot read video {path}: {err}") from None
    return np.stack([fit_frame(f, height, width) for f in clip.frames]), clip.fps


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a media file -> (float32 ``[channels, S]``, sample rate)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # planar float32, channels kept
            chunks, rate = [], stream.codec_context.sample_rate
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
    except av.FFmpegError as err:
        raise ValueError(f"cannot read audio {path}: {err}") from None
    if not chunks:
        raise ValueError(f"{path} holds no audio samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def retime_indices(num_source: int, native_fps: float, fps: float, num_out: int) -> np.ndarray:
    """Native frame shown at each of ``num_out`` output frames (sample-and-hold, see module docstring)."""
    ratio = Fraction(native_fps).limit_denominator(FPS_MAX_DENOMINATOR) / Fraction(fps).limit_denominator(
        FPS_MAX_DENOMINATOR)
    idx = np.array([math.floor(j * ratio) for j in range(num_out)], dtype=np.int64)  # exact rational floor
    return np.minimum(idx, num_source - 1)


def fit_audio(waveform: np.ndarray, sample_rate: int, duration: float) -> np.ndarray:
    """Cut or zero-pad ``[channels, S]`` to exactly ``duration`` seconds."""
    length = round(duration * sample_rate)
    waveform = waveform[:, :length]
    if waveform.shape[1] < length:
        waveform = np.pad(waveform, ((0, 0), (0, length - waveform.shape[1])))
    return np.ascontiguousarray(waveform, dtype=np.float32)


def write_file_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name such as {path / 'out.mp4'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
