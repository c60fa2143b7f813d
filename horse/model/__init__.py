"""The daVinci-MagiHuman DiT: config, presets, packing and the model (torch, einops, safetensors, numpy only)."""

from .config import AUDIO, PRESETS, TEXT, VIDEO, DiTConfig, get_config
from .dit import DiTModel, DiTOutput
from .precision import PrecisionPolicy

__all__ = ["AUDIO", "PRESETS", "TEXT", "VIDEO", "DiTConfig", "DiTModel", "DiTOutput", "PrecisionPolicy",
           "get_config"]
