"""A randomly initialised demo checkpoint folder (demo codecs, 32x32, 1-4 s, 8 fps native)."""

from __future__ import annotations

from pathlib import Path

import torch

from horse.checkpoint_folder import CheckpointConfig, SamplerDefaults, save_checkpoint_folder

DEMO_RESOLUTIONS = {"32p": [32, 32]}
DEMO_DURATIONS = [1.0, 4.0]
DEMO_FPS_OPTIONS = [8, 24, 30]
DEMO_NATIVE_FPS = 8
DEMO_MOTION_TEMPLATE = "motion score: {score:.1f}"
INIT_PRESETS = ("demo",)


def demo_checkpoint_config(model: str | dict = "demo", **fields) -> CheckpointConfig:
    """The demo checkpoint's config; ``model`` may be ``{"preset": "demo", ...overrides}``; ``fields`` override."""
    demo_codec = {"type": "demo"}
    base = CheckpointConfig(
        model=model,
        codecs={"video": dict(demo_codec), "audio": dict(demo_codec), "text": dict(demo_codec)},
        native_fps=DEMO_NATIVE_FPS,
        resolutions=dict(DEMO_RESOLUTIONS),
        default_resolution=next(iter(DEMO_RESOLUTIONS)),
        durations=list(DEMO_DURATIONS),
        fps_options=list(DEMO_FPS_OPTIONS),
        # measured on the default demo run (video trained at shift 3, audio at 1; docs/demo-experiments.md): the
        # re-noising sampler beats UniPC's ODE at 16 steps on shape, size, bounce count and jitter; sampling shift 1
        # or 3 and 16 or 32 steps score alike. Kept in step with configs/codec/demo.yaml (a test checks)
        sampler=SamplerDefaults(name="distilled", steps=16, shift=1.0, video_guidance=3.0, audio_guidance=3.0),
        motion_template=DEMO_MOTION_TEMPLATE,
        model_card={"description": "randomly initialised demo DiT (untrained): for testing the pipeline",
                    "data": None, "training_steps": 0},
    )
    for key, value in fields.items():
        if not hasattr(base, key):
            raise ValueError(f"unknown checkpoint config field {key!r}")
        setattr(base, key, value)
    return base.validate()


def init_checkpoint(out_dir: str | Path, preset: str = "demo", *, seed: int = 0, model: str | dict | None = None,
                    overwrite: bool = False, **fields) -> Path:
    """Write a randomly initialised checkpoint folder (``horse.model.init.init_weights``) and return its path."""
    from horse.model import DiTModel
    from horse.model.init import init_weights

    if preset not in INIT_PRESETS:
        raise ValueError(f"init-checkpoint knows the presets {INIT_PRESETS}, got {preset!r}")
    config = demo_checkpoint_config(model if model is not None else preset, **fields)
    dit = DiTModel(config.dit_config(), precision=config.precision)
    init_weights(dit, torch.Generator().manual_seed(seed))
    config.model_card = {**config.model_card, "init_seed": seed}
    return save_checkpoint_folder(out_dir, config, dit.state_dict(), overwrite=overwrite)
