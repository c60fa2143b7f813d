"""Codecs between media and the DiT's inputs: the released ones (Wan2.2 video VAE, Stable Audio Open
audio VAE, T5Gemma text encoder) and, in `horse.codecs.demo`, small stand-ins.

Imports are lazy: `import horse.codecs` loads neither diffusers nor transformers.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "WanVideoCodec": "horse.codecs.wan_video",
    "StableAudioCodec": "horse.codecs.stable_audio",
    "T5GemmaTextEncoder": "horse.codecs.t5gemma_text",
    "TextEncoding": "horse.codecs.t5gemma_text",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'horse.codecs' has no attribute {name!r}")
