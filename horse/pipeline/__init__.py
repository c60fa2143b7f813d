"""Generation: a horse checkpoint folder + prompt (+ image, + reference audio) -> MP4 (H.264 + AAC).

``Pipeline(checkpoint_dir).generate(prompt, "out.mp4", duration=2, fps=24, seed=0)`` -> ``GenerationResult``.
The folder format is ``horse.checkpoint_folder``; ``init_checkpoint`` writes a random demo one.
"""

from horse.pipeline.demo_checkpoint import demo_checkpoint_config, init_checkpoint
from horse.pipeline.pipeline import GenerationResult, Pipeline, generate
from horse.pipeline.velocity import Guidance, make_velocity_fn

__all__ = ["GenerationResult", "Guidance", "Pipeline", "demo_checkpoint_config", "generate", "init_checkpoint",
           "make_velocity_fn"]
