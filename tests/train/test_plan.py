"""The resource plan of ``+experiment=256p`` against numbers worked out by hand from the 15B shapes.

Nothing here calls train.plan's formulas: the memory model (fp32 masters: weights 4 B/param, gradients 4,
AdamW moments 8, EMA 4, all sharded over the 8 GPUs by ZeRO-3), the activation estimate (the formula
documented in train/plan.py, with checkpointing: every layer's fp32 input plus one layer's working set)
and the FLOPs (2 FLOPs per weight per token per pass, 4 passes with recomputation, plus attention) are
recomputed below from the released config's sizes.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).absolute().parents[2]
CONFIGS = str(REPO / "configs")
GIB = 2 ** 30

# ---- the released 15B (spec section 2) --------------------------------------------------------------------
D, HEAD_DIM, HEADS_Q, HEADS_KV, LAYERS = 5120, 128, 40, 8, 40
GELU_LAYERS, SWIGLU_LAYERS = 4, 36                 # gelu7 in layers 0-3, swiglu7 elsewhere
QKV = (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM + HEADS_Q  # q, k, v + one attention gate per query head = 7208
GELU_INNER = 4 * D                                   # 20480
SWIGLU_INNER = 13652                                 # 2/3 of 4*D = 13653.3, rounded down to a multiple of 4
VIDEO_IN, AUDIO_IN, TEXT_IN = 192, 64, 3584
PARAMS = 15_299_419_136

# ---- the experiment (configs/experiment/256p.yaml, plan/h100, trainer/gpu) ------------------------------------
TOKENS = (2912, 101, 640)        # video, audio, text tokens of one 4 s 448x256 sample with a full prompt
MICRO_BATCH, ACCUMULATE, GPUS = 1, 4, 8
PEAK, MFU, GPU_GIB = 9.89e14, 0.4, 80


def hand_plan() -> dict:
    per_gpu = lambda bytes_per_param: PARAMS * bytes_per_param / GPUS / GIB  # noqa: E731  (ZeRO-3 shards all)
    # activations: bf16 matmul inputs (2 B), fp32 everything else (4 B)
    attn = 2 * D * 4 + QKV * 4 + (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM * 2 + HEADS_Q * HEAD_DIM * (2 + 4)
    gelu_layer = attn + 2 * D * 4 + GELU_INNER * 4 + GELU_INNER * 2
    swiglu_layer = attn + 2 * D * 4 + 2 * SWIGLU_INNER * 4 + SWIGLU_INNER * 2
    assert (gelu_layer, swiglu_layer) == (278_688, 292_328)
    per_token = D * 4 * LAYERS + max(gelu_layer, swiglu_layer)
    tokens = sum(TOKENS) * MICRO_BATCH
    activations = tokens * per_token
    # FLOPs: one token meets every layer's attention projections and ONE expert's MLP, plus its embedder/head
    attn_w = D * QKV + HEADS_Q * HEAD_DIM * D
    layer_w = GELU_LAYERS * (attn_w + 2 * D * GELU_INNER) + SWIGLU_LAYERS * (attn_w + 3 * D * SWIGLU_INNER)
    assert layer_w == 10_912_645_120
    weights_per_token = (layer_w + 2 * VIDEO_IN * D, layer_w + 2 * AUDIO_IN * D, layer_w + TEXT_IN * D)
    seq = sum(TOKENS)
    forward = 2 * sum(n * w for n, w in zip(TOKENS, weights_per_token)) + 4 * seq * seq * HEADS_Q * HEAD_DIM * LAYERS
    passes = 4  # forward, backward (2x), forward again (activation checkpointing)
    flops = forward * passes * MICRO_BATCH * ACCUMULATE * GPUS
    fixed = PARAMS * (4 + 4 + 8 + 4)
    total = (fixed / GPUS + activations) / GIB
    return {"parameters": PARAMS, "weights_gib": per_gpu(4), "grads_gib": per_gpu(4), "optimizer_gib": per_gpu(8),
            "ema_gib": per_gpu(4), "activations_gib": activations / GIB, "total_gib": total,
            "tokens_per_sample": seq, "samples_per_step": MICRO_BATCH * ACCUMULATE * GPUS,
            "flops_per_step": flops, "step_seconds": flops / (GPUS * PEAK * MFU),
            "devices_needed": math.ceil(fixed / (GPU_GIB * GIB - activations)), "fits": total <= GPU_GIB}


def test_256p_plan_matches_hand_computation(capsys):
    from train.app import run

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=256p", "plan_only=true"])
    plan = run(cfg)["plan"]
    expected = hand_plan()
    for key, value in expected.items():
        assert plan[key] == pytest.approx(value, rel=1e-12), key
    assert plan["strategy"] == "deepspeed_zero3" and plan["devices"] == GPUS and plan["assumed_mfu"] == MFU
    # the worked example, rounded: 7.12 GiB of weights per GPU, 3.78 GiB of activations, 1.16e16 FLOPs, 3.67 s
    assert round(expected["activations_gib"], 2) == 3.78 and round(expected["step_seconds"], 2) == 3.67
    printed = capsys.readouterr().out
    for text in ("15,299,419,136", "deepspeed_zero3", f"{expected['weights_gib']:.2f} GiB",
                 f"{expected['optimizer_gib']:.2f} GiB", f"{expected['activations_gib']:.2f} GiB",
                 f"{expected['flops_per_step']:.3e}", f"{expected['step_seconds']:.2f} s at 40% MFU", "3,653"):
        assert text in printed, text


def test_plan_follows_strategy_and_checkpointing():
    """DDP keeps every state whole (no device count fits the 15B), and without checkpointing the activations
    are every layer's working set."""
    from train.app import run

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=256p", "plan_only=true", "trainer.strategy=ddp",
                                          "model.activation_checkpointing=false"])
    plan = run(cfg)["plan"]
    assert plan["weights_gib"] == pytest.approx(PARAMS * 4 / GIB) and plan["optimizer_gib"] == pytest.approx(
        PARAMS * 8 / GIB)
    assert plan["fits"] is False and plan["devices_needed"] == -1
    attn = 2 * D * 4 + QKV * 4 + (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM * 2 + HEADS_Q * HEAD_DIM * 6
    per_token = (GELU_LAYERS * (attn + 2 * D * 4 + GELU_INNER * 6)
                 + SWIGLU_LAYERS * (attn + 2 * D * 4 + SWIGLU_INNER * 10))
    assert plan["activations_gib"] == pytest.approx(sum(TOKENS) * per_token / GIB, rel=1e-12)


def test_256p_on_this_machine_fails_fast_with_the_plan(tmp_path):
    """No GPU here: train.py stops before touching data or building the 15B, prints the plan, exits 2."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "train.py", "+experiment=256p", f"output_root={tmp_path}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot run this experiment here" in proc.stderr
    for text in ("parameters", "15,299,419,136", "activations / device", "est. step time", "devices needed"):
        assert text in proc.stderr, text
    assert not (tmp_path / "magihuman-256p" / "checkpoints").exists()
