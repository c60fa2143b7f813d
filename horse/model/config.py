"""DiT configuration and the named presets.

Field names follow the official `ModelConfig` so that an official config dict
(or a parity fixture's ``config``) builds a model directly: ``DiTConfig.from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

VIDEO, AUDIO, TEXT = 0, 1, 2
MODALITIES = ("video", "audio", "text")

ACTIVATIONS = ("swiglu7", "gelu7")
ROPE_FREQUENCY_MODES = ("fixed", "learned", "learned_rotated")
PREDICTIONS = ("velocity", "sample")


@dataclass(frozen=True)
class DiTConfig:
    num_layers: int = 40
    hidden_size: int = 5120
    head_dim: int = 128
    num_query_groups: int = 8
    mm_layers: tuple[int, ...] = (0, 1, 2, 3, 36, 37, 38, 39)
    gelu7_layers: tuple[int, ...] = (0, 1, 2, 3)
    post_norm_layers: tuple[int, ...] = ()
    local_attn_layers: tuple[int, ...] = ()
    # Latent frames each side that a local_attn_layers video token sees (the release's frame_receptive_field).
    local_frame_window: int = 11
    # Layers where an audio token attends only to the video frames within audio_frame_window (latent frames,
    # or video tokens' frames) of its own time, plus all audio and text; video and text tokens are not
    # restricted there (unless the layer is also local). () is the release: audio sees everything. Timing a
    # sound to the picture needs the frame at the sound's time, which full attention with few RoPE bands per
    # axis (the demo's 4) can barely single out.
    audio_attn_layers: tuple[int, ...] | str = ()  # or "all"
    audio_frame_window: int = 1
    video_in_channels: int = 192
    # Latent (frames, rows, cols) per video token (the release: 1x2x2). video_in_channels must equal the
    # latent channels times their product. Frames > 1 put a short stretch of motion inside each token (as
    # a temporally compressing VAE does), which a per-frame pixel latent otherwise leaves to attention.
    video_patch: tuple[int, int, int] = (1, 2, 2)
    # Tokens on each side in time whose patches join a video token's *input* (0: the release). The input is
    # then (2k + 1) patches wide and the output stays the token's own patch: a temporal stencil at the input
    # (like a 3D-conv stem), so motion between neighbouring frames is visible without attention.
    video_context_frames: int = 0
    # Add a learned projection of each video token's absolute (t, h, w) Fourier features (the fixed RoPE bands'
    # sin/cos) to its embedding; zero-initialised, so a fresh model computes what the release does. The release
    # has only RoPE (relative) and no timestep input: a token learns where and when it is only through
    # attention. On the CPU demo it changed nothing measurable (README's results).
    video_position_embedding: bool = False
    # Modulate every layer's normalised inputs by the sample's mean caption embedding (DiT's adaLN: x*(1+scale)
    # + shift, per layer, zero-initialised, so a fresh model computes what the release does). The release has no
    # conditioning branch: text reaches the video only through joint attention, so a word that must change
    # *where* the object is at each time (a product of the word and each token's place) is read late. This path
    # multiplies the caption into every token's features. Not in the official checkpoints.
    caption_modulation: bool = False
    audio_in_channels: int = 64
    text_in_channels: int = 3584
    enable_attn_gating: bool = True
    norm_eps: float = 1e-6
    rope_temperature: float = 10000.0
    # The fastest band in radians per position step (the release: 1). Bands are max / temperature^(k/bands).
    rope_max_frequency: float = 1.0
    # fixed (the release) | learned | learned_rotated: learned (t, h, w) frequency vectors per KV head and
    # rotation pair (horse.model.rope), which let attention follow a moving object's oblique path.
    rope_frequencies: str = "fixed"
    # What the output rows mean, per modality: velocity eps - x0 (the release) or sample, the clean latent x0
    # (horse.diffusion.flow.velocity_from_sample turns it into a velocity for the loss and the samplers).
    # Why sample: a pixel-like latent is far more redundant than the noise, so a token's clean value is
    # low-dimensional while its velocity carries full-width noise through the model (Li & He 2025, "Back to
    # Basics: Let Denoising Generative Models Denoise", JiT).
    video_prediction: str = "velocity"
    audio_prediction: str = "velocity"
    # sample prediction divides by sigma; levels below this floor divide by it instead (JiT's clip)
    sample_prediction_min_sigma: float = 0.05
    # The release's MLP width multiplier: gelu7 uses mlp_ratio*D, swiglu7 uses 2/3 of that rounded down to 4.
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.audio_attn_layers == "all":
            object.__setattr__(self, "audio_attn_layers", tuple(range(self.num_layers)))
        elif isinstance(self.audio_attn_layers, str):
            raise ValueError(f"audio_attn_layers must be layer indices or 'all', got {self.audio_attn_layers!r}")
        for name in ("mm_layers", "gelu7_layers", "post_norm_layers", "local_attn_layers", "audio_attn_layers"):
            value = tuple(sorted(int(i) for i in getattr(self, name)))
            object.__setattr__(self, name, value)
            bad = [i for i in value if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"{name} lists layers {bad} outside 0..{self.num_layers - 1}")
        object.__setattr__(self, "video_patch", tuple(int(p) for p in self.video_patch))
        if len(self.video_patch) != 3 or any(p < 1 for p in self.video_patch):
            raise ValueError(f"video_patch must be 3 positive sizes (frames, rows, cols), got {self.video_patch}")
        if self.video_context_frames < 0 or self.video_in_channels % (2 * self.video_context_frames + 1):
            raise ValueError(f"video_context_frames must be >= 0 with video_in_channels ({self.video_in_channels}) "
                             f"a multiple of 2k+1 patches, got k={self.video_context_frames}")
        if self.local_frame_window < 0:
            raise ValueError(f"local_frame_window must be >= 0 latent frames each side, got {self.local_frame_window}")
        if self.audio_frame_window < 0:
            raise ValueError(f"audio_frame_window must be >= 0 frames each side, got {self.audio_frame_window}")
        if self.hidden_size % self.head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if not 0 < self.rope_max_frequency <= math.pi:
            raise ValueError(f"rope_max_frequency must be in (0, pi] radians per step (beyond pi a band aliases), "
                             f"got {self.rope_max_frequency}")
        if self.rope_frequencies not in ROPE_FREQUENCY_MODES:
            raise ValueError(f"rope_frequencies must be one of {ROPE_FREQUENCY_MODES}, got {self.rope_frequencies!r}")
        for name in ("video_prediction", "audio_prediction"):
            if getattr(self, name) not in PREDICTIONS:
                raise ValueError(f"{name} must be one of {PREDICTIONS}, got {getattr(self, name)!r}")
        if not 0 < self.sample_prediction_min_sigma < 1:
            raise ValueError(f"sample_prediction_min_sigma must be in (0, 1), got {self.sample_prediction_min_sigma}")
        if self.head_dim % 8:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 8 (RoPE uses head_dim/8 bands per axis)")
        if self.num_heads_q % self.num_query_groups:
            raise ValueError(
                f"{self.num_heads_q} query heads cannot be split into num_query_groups={self.num_query_groups}"
            )

    # ---- derived sizes -------------------------------------------------
    @property
    def num_heads_q(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def num_heads_kv(self) -> int:
        return self.num_query_groups

    @property
    def rope_bands(self) -> int:
        return self.head_dim // 8

    @property
    def qkv_width(self) -> int:
        gates = self.num_heads_q if self.enable_attn_gating else 0
        return (self.num_heads_q + 2 * self.num_heads_kv) * self.head_dim + gates

    @property
    def gelu7_intermediate(self) -> int:
        return self.mlp_ratio * self.hidden_size

    @property
    def swiglu7_intermediate(self) -> int:
        return (self.hidden_size * self.mlp_ratio * 2 // 3) // 4 * 4

    @property
    def max_in_channels(self) -> int:
        return max(self.video_in_channels, self.audio_in_channels, self.text_in_channels)

    @property
    def video_out_channels(self) -> int:
        """Values per video output row: one patch (the input also holds the context frames' patches)."""
        return self.video_in_channels // (2 * self.video_context_frames + 1)

    @property
    def out_channels(self) -> int:
        return max(self.video_out_channels, self.audio_in_channels)

    def num_experts(self, layer: int) -> int:
        return 3 if layer in self.mm_layers else 1

    def activation(self, layer: int) -> str:
        return "gelu7" if layer in self.gelu7_layers else "swiglu7"

    # ---- (de)serialisation ---------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        """Build from horse's own dict or the official ``ModelConfig`` field names.

        Official-only fields that do not change the architecture (``params_dtype``,
        ``checkpoint_qk_layernorm_rope``, ``tread_config``, ``num_heads_q``...) are accepted
        and ignored; anything else unknown is an error so a typo is never silently dropped.
        """
        ignored = {"params_dtype", "checkpoint_qk_layernorm_rope", "tread_config", "num_heads_q", "num_heads_kv",
                   "layernorm_epsilon", "activation_type"}
        if d.get("activation_type", "swiglu7") != "swiglu7":
            raise ValueError(f"activation_type {d['activation_type']!r} is not supported: the release uses swiglu7 "
                             "everywhere except gelu7_layers; set gelu7_layers instead")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
            elif key == "layernorm_epsilon":
                kwargs["norm_eps"] = value
            elif key not in ignored:
                raise ValueError(f"unknown DiT config field {key!r}; known fields: {sorted(known)}")
        # an unvalidated official ModelConfig dump carries 0 here until its validator fills them in
        if d.get("num_heads_q") and d["num_heads_q"] != d.get("hidden_size", cls.hidden_size) // d.get(
                "head_dim", cls.head_dim):
            raise ValueError("num_heads_q must equal hidden_size // head_dim")
        if d.get("num_heads_kv") and d["num_heads_kv"] != d.get("num_query_groups", cls.num_query_groups):
            raise ValueError("num_heads_kv must equal num_query_groups")
        return cls(**kwargs)

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


# The released config, the 1080p SR variant (local attention everywhere except every 4th layer),
# a benchmark size and the CPU demo size. Keep README's preset table in sync (a test checks).
_SR1080_FULL_LAYERS = (3, 7, 11, 15, 19, 23, 27, 31)

PRESETS: dict[str, DiTConfig] = {
    "magihuman-15b": DiTConfig(),
    "magihuman-15b-sr1080": DiTConfig(
        local_attn_layers=tuple(i for i in range(40) if i not in _SR1080_FULL_LAYERS)),
    "small": DiTConfig(
        num_layers=12, hidden_size=768, head_dim=64, num_query_groups=3,
        mm_layers=(0, 1, 10, 11), gelu7_layers=(0, 1), text_in_channels=256),
    # The CPU demo: widths of the demo codecs (48-channel pixel latents x 2x2 patch, 64-channel
    # audio, 128-wide frozen text features); sized so the default training run learns in minutes.
    # (6 layers of 192 learn shapes-AV faster per CPU-minute than 8 of 256: more optimizer steps.)
    # head_dim 32 leaves 4 RoPE bands per axis; at the release's temperature 1e4 (1, 0.1, 0.01, 0.001 rad
    # per step) only one of them separates the 4x4 token grid's positions, at 100 (1, 0.32, 0.1, 0.03)
    # three do, and the demo's samples go from fragments to one object (measured; see the README).
    "demo": DiTConfig(
        num_layers=6, hidden_size=192, head_dim=32, num_query_groups=2,
        mm_layers=(0, 5), gelu7_layers=(0,), text_in_channels=128, rope_temperature=100.0),
}

PRESET_DESCRIPTIONS = {
    "magihuman-15b": "the released daVinci-MagiHuman DiT (base, distill, 540p SR)",
    "magihuman-15b-sr1080": "the 1080p SR DiT: local attention in all but layers 3,7,...,31",
    "small": "benchmark size (hidden 768, 12 layers)",
    "demo": "CPU demo on shapes-AV with the demo codecs",
}


def get_config(name_or_dict: str | dict | DiTConfig, **overrides) -> DiTConfig:
    """A preset name, a config dict (horse or official field names) or a config."""
    if isinstance(name_or_dict, DiTConfig):
        cfg = name_or_dict
    elif isinstance(name_or_dict, dict):
        cfg = DiTConfig.from_dict(name_or_dict)
    elif name_or_dict in PRESETS:
        cfg = PRESETS[name_or_dict]
    else:
        raise ValueError(f"unknown model preset {name_or_dict!r}; choose one of {sorted(PRESETS)}")
    return cfg.replace(**overrides) if overrides else cfg


__all__ = ["DiTConfig", "PRESETS", "PRESET_DESCRIPTIONS", "get_config", "VIDEO", "AUDIO", "TEXT", "MODALITIES"]
