"""Every size, rate, palette and vocabulary of shapes-AV, in one frozen dataclass.

The defaults fit the demo codecs (``horse/codecs/demo/spec.py``): 16 frames at 8 fps (2 s) of 32x32
pixels -> latent [48, 16, 8, 8] -> 16 tokens per frame after the DiT's 2x2 patch (256 video tokens),
4F+1 = 65 audio tokens, and a caption of about 25 text tokens.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

# Shape colours: saturated and far apart in RGB so that even after H.264's 4:2:0 chroma
# subsampling the nearest palette entry of a shape's mean colour is its true colour.
DEFAULT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 255),
    "yellow": (245, 230, 30),
    "magenta": (230, 40, 220),
    "cyan": (30, 220, 230),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
}
# Backgrounds: dark, so every shape colour stands out; named with words of the demo text vocabulary.
DEFAULT_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "grey": (48, 48, 48),
    "brown": (56, 32, 16),
}
DEFAULT_SHAPES = ("circle", "square", "triangle")
# Side of the shape's square bounding box in pixels.
DEFAULT_SIZES: dict[str, float] = {"small": 8.0, "large": 14.0}
# Speed classes: (min, max) pixels per frame; each clip draws its speed uniformly in the range,
# so the motion score varies within a class. Fast gives ~3-4 bounces in 16 frames, slow ~1.
DEFAULT_SPEEDS: dict[str, tuple[float, float]] = {"slowly": (1.5, 2.5), "quickly": (3.5, 5.0)}
# Directions as image-space unit vectors (x right, y down); diagonals are normalised.
_D = 0.5 ** 0.5
DEFAULT_DIRECTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up right": (_D, -_D), "up left": (-_D, -_D), "down right": (_D, _D), "down left": (-_D, _D),
}
# Tone per shape: (label, Hz). Below the demo codec's 1024 Hz Nyquist and >= 12 MDCT bins (16 Hz each) apart.
DEFAULT_PITCHES: dict[str, tuple[str, float]] = {
    "circle": ("low", 300.0), "square": ("medium", 500.0), "triangle": ("high", 800.0),
}
# Colour x shape pairs never generated for train/val; each colour and shape still occurs in training.
DEFAULT_HELD_OUT = (("orange", "circle"), ("cyan", "square"), ("magenta", "triangle"))


@dataclass(frozen=True)
class ShapesConfig:
    """Generation parameters of shapes-AV (all defaults documented in the module constants above)."""

    num_frames: int = 16
    fps: int = 8
    height: int = 32
    width: int = 32
    sample_rate: int = 16000  # stored audio rate (AAC needs >= 8 kHz); the demo codec resamples to 2048 Hz
    supersample: int = 4  # anti-aliasing: sub-pixel samples per pixel side when rasterising
    colours: dict = field(default_factory=lambda: dict(DEFAULT_COLOURS))
    backgrounds: dict = field(default_factory=lambda: dict(DEFAULT_BACKGROUNDS))
    shapes: tuple = DEFAULT_SHAPES
    sizes: dict = field(default_factory=lambda: dict(DEFAULT_SIZES))
    speeds: dict = field(default_factory=lambda: dict(DEFAULT_SPEEDS))
    directions: dict = field(default_factory=lambda: dict(DEFAULT_DIRECTIONS))
    pitches: dict = field(default_factory=lambda: dict(DEFAULT_PITCHES))
    held_out: tuple = DEFAULT_HELD_OUT
    # Share of the free extent (frame minus shape) from which the shape's first position is drawn, centred:
    # 0 starts every shape in the middle, 1 anywhere. Small values make each trajectory (and its bounce
    # times) nearly a function of the caption, which the CPU demo learns; see the README's results.
    start_spread: float = 0.2
    test_held_out_fraction: float = 0.5  # share of the test split drawn from the held-out pairs
    tone_duration_s: float = 0.125  # one video frame at 8 fps
    tone_fade_in_s: float = 0.002  # short, so the onset stays sharp without a click
    tone_fade_out_s: float = 0.010
    tone_amplitude: float = 0.5  # = demo codec REFERENCE_TONE_AMPLITUDE (unit-RMS latents)
    motion_score_max_speed: float = 5.0  # px/frame mapped to motion score 1.0 (see package docstring)
    crf: int = 14  # x264 quality of the stored MP4s (low: flat colours survive on tiny frames)
    x264_preset: str = "veryfast"  # encode speed/size trade-off; quality is set by crf
    shard_max_count: int = 1000  # clips per webdataset shard

    def __post_init__(self):
        if self.num_frames < 2 or self.fps <= 0 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"num_frames must be >= 2 and fps/height/width > 0, got {self.num_frames}, "
                             f"{self.fps}, {self.height}x{self.width}")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even (H.264 4:2:0), got {self.height}x{self.width}")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be >= 8000 Hz for AAC, got {self.sample_rate}")
        if max(self.sizes.values()) >= min(self.height, self.width):
            raise ValueError(f"every shape size must be smaller than the frame, got sizes {self.sizes} "
                             f"for {self.height}x{self.width}")
        missing = set(self.shapes) - set(self.pitches)
        if missing:
            raise ValueError(f"shapes {sorted(missing)} have no pitch; add them to ShapesConfig.pitches")
        unknown = set(self.shapes) - set(DEFAULT_SHAPES)
        if unknown:
            raise ValueError(f"unknown shapes {sorted(unknown)}; the renderer draws only {DEFAULT_SHAPES}")
        for pair in self.held_out:
            if pair[0] not in self.colours or pair[1] not in self.shapes:
                raise ValueError(f"held-out pair {pair} is not a (colour, shape) of this config")
        if len(self.held_out) >= len(self.colours) * len(self.shapes):
            raise ValueError("held_out leaves no colour x shape pair for training")
        if not 0.0 <= self.test_held_out_fraction <= 1.0:
            raise ValueError(f"test_held_out_fraction must be in [0, 1], got {self.test_held_out_fraction}")
        if not 0.0 <= self.start_spread <= 1.0:
            raise ValueError(f"start_spread must be in [0, 1] (0: start in the middle, 1: anywhere), "
                             f"got {self.start_spread}")
        if self.motion_score_max_speed <= 0:
            raise ValueError(f"motion_score_max_speed must be > 0, got {self.motion_score_max_speed}")
        nyquist = self.sample_rate / 2
        if any(hz >= nyquist for _, hz in self.pitches.values()):
            raise ValueError(f"every pitch must be below the Nyquist frequency {nyquist} Hz, got {self.pitches}")

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists); ``from_dict`` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "ShapesConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ShapesConfig fields {sorted(unknown)}")
        fixed = dict(data)
        for key in ("colours", "backgrounds", "speeds", "directions", "pitches"):
            if key in fixed:
                fixed[key] = {k: tuple(v) for k, v in fixed[key].items()}
        if "shapes" in fixed:
            fixed["shapes"] = tuple(fixed["shapes"])
        if "held_out" in fixed:
            fixed["held_out"] = tuple(tuple(p) for p in fixed["held_out"])
        return cls(**fixed)
