"""The horse checkpoint folder: everything ``horse generate`` needs to turn a prompt into an MP4.

Layout::

    DIR/config.json         CheckpointConfig below (format_version 1)
    DIR/model.safetensors   the DiT weights under the official key names (any layout horse.checkpoint reads)
    DIR/...                 codec files, when the config's codec paths point inside the folder

An official release folder (DiT weights only) is used through a config whose ``weights`` names that folder
(absolute, or relative to DIR) and whose ``codecs`` name the external Wan2.2 / Stable Audio Open / T5Gemma
folders. The release's negative prompt is a value of that config that the user supplies: horse embeds no
prompt text of its own.

config.json fields (``model`` and ``codecs`` are required, the rest have defaults):
- ``model``: a preset name (``"demo"``), a dict of official ``ModelConfig`` fields, or ``{"preset": NAME, ...}``
  with fields overriding the preset.
- ``precision``: ``"fp32"`` or ``"mixed"`` (bf16 matmuls over fp32 master weights).
- ``coords_style``: ``"v2"`` (base/distill) or ``"v1"`` (SR models).
- ``video_frame_correlation``: the correlation of neighbouring latent frames' starting noise the model was
  trained with (``objective.noise.video_frame_correlation``; 0 = independent, the release).
- ``codecs``: ``{"video"|"audio"|"text": {"type": ..., "path": ...}}``; types in ``CODEC_TYPES``; a path is
  relative to DIR or absolute; demo codecs need none.
- ``native_fps``: frame rate the model generates at; ``fps_options``: output rates offered (retimed from native).
- ``resolutions``: ``{name: [H, W]}``; ``default_resolution``: one of the names.
- ``durations``: ``[min, max]`` seconds.
- ``sampler``: defaults of ``SamplerDefaults``.
- ``negative_prompt``: text of the unconditional (CFG) pass; when empty, ``null_text`` (the caption-dropout text
  of training) is used instead.
- ``motion_template``: e.g. ``"motion score: {score:.1f}"``, appended to the prompt for ``motion_strength``; the
  score is ``motion_score_range[0] + strength * (motion_score_range[1] - motion_score_range[0])``. null: no motion
  control.
- ``weights``: the DiT weights (file or folder), relative to DIR or absolute.
- ``model_card``: free-form dict (data, steps, losses, scores...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PRECISIONS = ("fp32", "mixed")
COORDS_STYLES = ("v1", "v2")
SAMPLERS = ("unipc", "euler", "distilled")
CODEC_TYPES = {"video": ("demo", "wan2.2"), "audio": ("demo", "stable_audio_open"), "text": ("demo", "t5gemma")}


@dataclass
class SamplerDefaults:
    """Sampler settings a generation uses unless told otherwise (release defaults, spec 5.2-5.3)."""

    name: str = "unipc"
    steps: int = 32
    shift: float = 5.0
    video_guidance: float = 5.0
    audio_guidance: float = 5.0
    late_video_guidance: float | None = 2.0  # video scale once int(sigma*1000) <= switch_timestep; None: no switch
    switch_timestep: int = 500
    # after the joint pass, sample the audio again from fresh noise with the finished video held clean
    # (video-to-audio), so the sound follows the picture; costs a second pass of `steps` model calls
    audio_after_video: bool = False

    def validate(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler name must be one of {SAMPLERS}, got {self.name!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler steps must be an integer >= 1, got {self.steps!r}")
        if self.shift <= 0:
            raise ValueError(f"sampler shift must be > 0, got {self.shift}")
        if not isinstance(self.audio_after_video, bool):
            raise ValueError(f"sampler audio_after_video must be true or false, got {self.audio_after_video!r}")


def _check_type(name: str, value: Any, types: tuple, what: str) -> None:
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ValueError(f"config field {name!r} must be {what}, got {value!r}")


@dataclass
class CheckpointConfig:
    model: str | dict
    codecs: dict
    native_fps: float = 8
    resolutions: dict = field(default_factory=lambda: {"32p": [32, 32]})
    default_resolution: str = "32p"
    durations: list = field(default_factory=lambda: [1.0, 4.0])
    fps_options: list = field(default_factory=lambda: [8, 24, 30])
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    precision: str = "fp32"
    coords_style: str = "v2"
    video_frame_correlation: float = 0.0
    negative_prompt: str = ""
    null_text: str = ""
    motion_template: str | None = None
    motion_score_range: list = field(default_factory=lambda: [0.0, 1.0])
    weights: str = WEIGHTS_FILE
    model_card: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> "CheckpointConfig":
        """Check every field; raises ValueError naming the field and what is expected."""
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version!r} is not supported (this horse reads "
                             f"{FORMAT_VERSION})")
        _check_type("model", self.model, (str, dict), "a preset name or a dict of model fields")
        self.dit_config()
        _check_type("precision", self.precision, (str,), f"one of {PRECISIONS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"config field 'precision' must be one of {PRECISIONS}, got {self.precision!r}")
        _check_type("video_frame_correlation", self.video_frame_correlation, (int, float), "a number in [0, 1)")
        if not 0 <= self.video_frame_correlation < 1:
            raise ValueError(f"config field 'video_frame_correlation' must be in [0, 1), got "
                             f"{self.video_frame_correlation!r}")
        if self.coords_style not in COORDS_STYLES:
            raise ValueError(f"config field 'coords_style' must be one of {COORDS_STYLES}, got {self.coords_style!r}")
        self._validate_codecs()
        _check_type("native_fps", self.native_fps, (int, float), "a positive number")
        _check_type("resolutions", self.resolutions, (dict,), "a dict {name: [H, W]}")
        for name, hw in self.resolutions.items():
            if not (isinstance(hw, (list, tuple)) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw)):
                raise ValueError(f"resolution {name!r} must be [H, W] with positive integers, got {hw!r}")
        if self.default_resolution not in self.resolutions:
            raise ValueError(f"default_resolution {self.default_resolution!r} is not one of the resolutions "
                             f"{sorted(self.resolutions)}")
        d = self.durations
        if not (isinstance(d, (list, tuple)) and len(d) == 2 and all(isinstance(v, (int, float)) for v in d)
                and 0 < d[0] <= d[1]):
            raise ValueError(f"config field 'durations' must be [min, max] seconds with 0 < min <= max, got {d!r}")
        if not (isinstance(self.fps_options, (list, tuple)) and self.fps_options
                and all(isinstance(v, (int, float)) and v > 0 for v in self.fps_options)):
            raise ValueError(f"config field 'fps_options' must be a non-empty list of positive rates, "
                             f"got {self.fps_options!r}")
        if self.native_fps <= 0:
            raise ValueError(f"config field 'native_fps' must be > 0, got {self.native_fps}")
        self.sampler.validate()
        for name in ("negative_prompt", "null_text", "weights"):
            _check_type(name, getattr(self, name), (str,), "a string")
        _check_type("model_card", self.model_card, (dict,), "a dict")
        if self.motion_template is not None:
            self.motion_phrase(0.5)
        return self

    def _validate_codecs(self) -> None:
        _check_type("codecs", self.codecs, (dict,), "a dict with video, audio and text entries")
        if set(self.codecs) != set(CODEC_TYPES):
            raise ValueError(f"config field 'codecs' must have exactly the entries {sorted(CODEC_TYPES)}, "
                             f"got {sorted(self.codecs)}")
        for part, allowed in CODEC_TYPES.items():
            entry = self.codecs[part]
            if not isinstance(entry, dict) or entry.get("type") not in allowed:
                raise ValueError(f"codecs.{part} must be {{'type': one of {allowed}, 'path': ...}}, got {entry!r}")
            unknown = set(entry) - {"type", "path"}
            if unknown:
                raise ValueError(f"codecs.{part} has unknown entries {sorted(unknown)}; use 'type' and 'path'")
            if entry["type"] != "demo" and not isinstance(entry.get("path"), str):
                raise ValueError(f"codecs.{part} of type {entry['type']!r} needs a 'path' to its files")

    # ---- derived -----------------------------------------------------------------------------
    def dit_config(self):
        from horse.model.config import get_config

        if isinstance(self.model, dict) and "preset" in self.model:
            overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model.items() if k != "preset"}
            return get_config(self.model["preset"], **overrides)
        return get_config(self.model)

    def motion_phrase(self, strength: float) -> str:
        """The text appended to the prompt for a motion strength in [0, 1]."""
        if self.motion_template is None:
            raise ValueError("this checkpoint declares no motion_template, so motion_strength cannot be used; "
                             "drop the parameter or add a motion_template to config.json")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"motion_strength must be within [0, 1], got {strength}")
        lo, hi = self.motion_score_range
        try:
            return self.motion_template.format(score=lo + strength * (hi - lo))
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"motion_template {self.motion_template!r} must format with one field {{score}}: "
                             f"{err}") from None

    def resolve(self, root: Path, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(root) / p

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "config") -> "CheckpointConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown fields {unknown}; known fields: {sorted(known)}")
        missing = [k for k in ("format_version", "model", "codecs") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing required fields {missing}")
        kwargs = dict(data)
        sampler = kwargs.get("sampler", {})
        if not isinstance(sampler, Mapping):
            raise ValueError(f"{source}: 'sampler' must be a dict, got {sampler!r}")
        sampler_fields = {f.name for f in dataclasses.fields(SamplerDefaults)}
        if set(sampler) - sampler_fields:
            raise ValueError(f"{source}: unknown sampler fields {sorted(set(sampler) - sampler_fields)}; "
                             f"known: {sorted(sampler_fields)}")
        kwargs["sampler"] = SamplerDefaults(**sampler)
        try:
            return cls(**kwargs).validate()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None


def read_config(folder: str | Path) -> CheckpointConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} not found (create one with 'horse init-checkpoint')")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a horse checkpoint folder holds {CONFIG_FILE} and "
                                f"{WEIGHTS_FILE}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    return CheckpointConfig.from_dict(data, source=str(path))


def load_checkpoint_folder(folder: str | Path, device: str | torch.device = "cpu"):
    """``(config, model)``: the DiT is built on the meta device and filled from the weights (strict key check),
    with fp32 master weights; ``config.precision`` selects the compute policy."""
    from horse.checkpoint import load_state_dict_folder
    from horse.model import DiTModel

    config = read_config(folder)
    weights = config.resolve(Path(folder), config.weights)
    if not weights.exists():
        raise FileNotFoundError(f"weights {weights} named by {Path(folder) / CONFIG_FILE} are missing")
    with torch.device("meta"):
        model = DiTModel(config.dit_config(), precision=config.precision)
    load_state_dict_folder(model, weights, strict=True, dtype=torch.float32, device=device)
    return config, model.eval().requires_grad_(False)


def save_checkpoint_folder(folder: str | Path, config: CheckpointConfig, state_dict: Mapping[str, torch.Tensor],
                           *, overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors into ``folder`` atomically (built in a temporary folder, then renamed).

    ``config.weights`` is set to ``model.safetensors``. An existing folder is replaced only with ``overwrite``.
    """
    from horse.checkpoint import save_state_dict_folder

    final = Path(folder)
    config = dataclasses.replace(config, weights=WEIGHTS_FILE).validate()
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; choose another folder or pass overwrite")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        save_state_dict_folder(state_dict, tmp / "weights", metadata={"horse_format_version": str(FORMAT_VERSION)})
        os.replace(tmp / "weights" / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        (tmp / "weights").rmdir()
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp creates 0o700
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
