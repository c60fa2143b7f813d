"""``horse bench model``: forward(+backward) throughput of a preset against this machine's matmul rate.

The pack: ``--samples`` equal samples filling ``--tokens``, each a video latent
of ``--frames`` latent frames (square token grid), audio at 4 tokens per latent
frame and the rest text (``--text-tokens``). Attention FLOPs are counted per
sample (block-diagonal), and there is no activation recomputation.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from horse.model import DiTModel, get_config
from horse.model.flops import forward_flops, training_flops
from horse.model.init import init_weights
from horse.model.packing import pack_for_model


def sample_layout(tokens: int, frames: int, text: int) -> tuple[int, int, int, int]:
    """(grid_side, video, audio, text) for one sample of ~``tokens`` tokens."""
    audio = 4 * (frames - 1) + 1
    side = int(math.sqrt(max(1, tokens - audio - text) / frames))
    video = frames * side * side
    return side, video, audio, tokens - video - audio


def build_pack(cfg, tokens: int, samples: int, frames: int, text: int, generator):
    per = tokens // samples
    side, nv, na, nt = sample_layout(per, frames, text)
    pt, ph, pw = cfg.video_patch
    c = cfg.video_out_channels // (pt * ph * pw)
    batch = [{"video": torch.randn(c, frames * pt, ph * side, pw * side, generator=generator),
              "audio": torch.randn(na, cfg.audio_in_channels, generator=generator),
              "text": torch.randn(nt, cfg.text_in_channels, generator=generator)} for _ in range(samples)]
    return pack_for_model(batch, cfg), [(nv, na, nt)] * samples


def matmul_gflops(n: int, k: int, m: int, dtype=torch.float32, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, k, dtype=dtype), torch.randn(k, m, dtype=dtype)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n * k * m * reps / (time.perf_counter() - start) / 1e9


def time_model(model, packed, forward_only: bool, seconds: float, warmup: int) -> tuple[float, int]:
    inputs = packed.model_inputs()
    weight = torch.randn(packed.num_tokens, model.config.out_channels)

    def step():
        if forward_only:
            with torch.no_grad():
                model(**inputs)
        else:
            out = model(**inputs)
            (out * weight).sum().backward()
            model.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    reps, start = 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - start < seconds:
        step()
        reps += 1
    return (time.perf_counter() - start) / reps, reps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="horse bench model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--samples", type=int, default=4, help="samples in the pack (attention is per sample)")
    p.add_argument("--frames", type=int, default=8, help="latent video frames per sample")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=["fp32", "mixed"])
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--seconds", type=float, default=10.0, help="minimum timed duration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_config(args.preset)
    gen = torch.Generator().manual_seed(0)
    model = init_weights(DiTModel(cfg, precision=args.precision), gen)
    packed, counts = build_pack(cfg, args.tokens, args.samples, args.frames, args.text_tokens, gen)
    flops = forward_flops(cfg, counts) if args.forward_only else training_flops(cfg, counts)
    mode = "forward" if args.forward_only else "forward+backward"
    nv, na, nt = counts[0]
    print(f"preset={args.preset} precision={args.precision} mode={mode} threads={torch.get_num_threads()}")
    print(f"pack: {args.samples} samples x (video {nv} = {args.frames}x{int(math.sqrt(nv // args.frames))}^2, "
          f"audio {na}, text {nt}) = {packed.num_tokens} tokens; {flops / 1e9:.1f} GFLOP per step")
    dtype = torch.bfloat16 if args.precision == "mixed" else torch.float32
    h = cfg.hidden_size
    mm_before = matmul_gflops(packed.num_tokens, h, 4 * h, dtype)
    step_s, reps = time_model(model, packed, args.forward_only, args.seconds, args.warmup)
    mm_after = matmul_gflops(packed.num_tokens, h, 4 * h, dtype)
    mm = max(mm_before, mm_after)
    model_gflops = flops / step_s / 1e9
    tokens_per_s = packed.num_tokens / step_s
    print(f"step {step_s * 1e3:.1f} ms over {reps} steps; matmul [{packed.num_tokens}x{h}]@[{h}x{4 * h}] "
          f"{mm_before:.1f} / {mm_after:.1f} GFLOP/s (before/after)")
    print(f"tokens_per_s={tokens_per_s:.1f} model_gflops={model_gflops:.1f} matmul_gflops={mm:.1f} "
          f"ratio={model_gflops / mm:.3f}")
    return 0
