"""Distributed strategies: DDP, DeepSpeed ZeRO-2 / ZeRO-3 (on DeepSpeed's CPU accelerator) and FSDP2.

Every strategy trains the same 2-rank run (gradient accumulation 2, EMA, clipping active at
every step); the maths is the same, so per-step losses, gradient norms and the raw / EMA
validation losses must match DDP's to float rounding. A strategy that lost a micro-batch's
gradients, clipped twice or not at all, or validated "EMA" with raw weights would not.
Checkpoints must hold the EMA sharded like the parameters under ZeRO-3 and FSDP2.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.train.conftest import REPO, TINY_ARGS, read_records, run_train, train_argv, train_env

GRAD_CLIP = 0.05  # far below this tiny model's gradient norms: every step clips
MAX_STEPS = 4
COMMON = [f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every_n_steps=2", "validation.every_n_steps=2",
          f"optim.grad_clip={GRAD_CLIP}"]
RUNS = {
    "ddp": ["trainer=ddp"],
    "deepspeed_zero2": ["trainer=deepspeed_zero2"],
    # a persistence threshold below the big matrices: both ZeRO-3 parameter kinds (kept whole / gathered)
    "deepspeed_zero3": ["trainer=deepspeed_zero3", "model.activation_checkpointing=true",
                        "++trainer.deepspeed={zero_optimization:{stage3_param_persistence_threshold:1000}}"],
    "fsdp2": ["trainer=fsdp2", "model.activation_checkpointing=true"],
    "deepspeed_zero2_offload": ["trainer=deepspeed_zero2", "trainer.offload=true"],
    "deepspeed_zero3_offload": ["trainer=deepspeed_zero3", "trainer.offload=true"],
}
SHARDED = ("deepspeed_zero3", "fsdp2", "deepspeed_zero3_offload")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, horse_cache):
    """``runs(name)``: the run folder of one 2-rank run, trained on first use."""
    root = tmp_path_factory.mktemp("strategies")
    done = {}

    def get(name: str):
        if name not in done:
            run_train(train_argv(root, name, *COMMON, *RUNS[name], nproc=2), train_env(horse_cache),
                      root / f"{name}.log")
            done[name] = root / name
        return done[name]
    return get


def _validation(run_dir) -> dict:
    return {v["step"]: v for v in json.loads((run_dir / "summary.json").read_text())["validation"]}


def _rank_states(run_dir) -> list[dict]:
    folder = run_dir / "checkpoints" / f"step-{MAX_STEPS}"
    return [torch.load(folder / f"rank-{r}-of-2.pt", weights_only=False) for r in range(2)]


def _ddp_ema_numel(ddp_dir) -> int:
    state = torch.load(ddp_dir / "checkpoints" / f"step-{MAX_STEPS}" / "state.ckpt", weights_only=False)
    return sum(t.numel() for t in state["horse"]["ema"]["shadow"].values())


def check_matches_ddp(runs, name: str, rtol: float = 1e-5) -> None:
    ref, got = read_records(runs("ddp")), read_records(runs(name))
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(1, MAX_STEPS + 1))
    for key in ("loss", "grad_norm"):
        a = torch.tensor([r[key] for r in ref], dtype=torch.float64)
        b = torch.tensor([r[key] for r in got], dtype=torch.float64)
        torch.testing.assert_close(b, a, rtol=rtol, atol=0, msg=f"{name} {key}: {b.tolist()} vs ddp {a.tolist()}")
    assert min(r["grad_norm"] for r in ref) > GRAD_CLIP, "the test needs clipping active at every step"
    ref_val, got_val = _validation(runs("ddp")), _validation(runs(name))
    assert sorted(got_val) == sorted(ref_val) == [2, 4]
    for step in ref_val:
        assert ref_val[step]["ema"]["loss"] != ref_val[step]["raw"]["loss"]
        for weights in ("raw", "ema"):
            torch.testing.assert_close(got_val[step][weights]["loss"], ref_val[step][weights]["loss"], rtol=rtol,
                                       atol=0, msg=f"{name} validation {weights} at step {step}")


def check_ema_checkpoint(runs, name: str) -> None:
    """Sharded strategies: each rank's file holds its half of the EMA; others keep it in the main state."""
    states = _rank_states(runs(name))
    assert all(s["loader"]["states"] for s in states)
    if name not in SHARDED:
        assert all(s["ema"] is None for s in states)
        return
    total = _ddp_ema_numel(runs("ddp"))
    sizes = [sum(t.numel() for t in s["ema"]["shadow"].values()) for s in states]
    assert all(s["ema"]["updates"] == MAX_STEPS for s in states)
    # ZeRO-3 pads each partition to equal size: at most one element per parameter and rank over half
    num_params = len(states[0]["ema"]["shadow"])
    for size in sizes:
        assert total / 2 <= size <= total / 2 + num_params, (sizes, total)


def test_ddp_keeps_replicated_ema_in_main_state(runs):
    check_ema_checkpoint(runs, "ddp")
    assert _ddp_ema_numel(runs("ddp")) > 0


@pytest.mark.parametrize("name", ["fsdp2", "deepspeed_zero3"])
def test_sharded_strategy_matches_ddp_and_shards_ema(runs, name):
    check_matches_ddp(runs, name)
    check_ema_checkpoint(runs, name)


def test_deepspeed_zero2_matches_ddp(runs):
    check_matches_ddp(runs, "deepspeed_zero2")
    check_ema_checkpoint(runs, "deepspeed_zero2")
    # no JIT compile at start-up: DeepSpeed's shared-memory op (unused by training) is not built
    log = (runs("deepspeed_zero2").parent / "deepspeed_zero2.log").read_text()
    assert "shm_comm" not in log


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed_zero2_offload", "deepspeed_zero3_offload"])
def test_deepspeed_offload_with_cpu_adam_matches_ddp(runs, name):
    # DeepSpeedCPUAdam is the same AdamW update in vectorised C++: equal to rounding, compounded over steps
    check_matches_ddp(runs, name, rtol=1e-4)
    check_ema_checkpoint(runs, name)


# ---- in-process checks of the strategy set-up (no processes launched) ------------------------------

def test_a_killed_compiles_build_lock_is_removed_and_a_live_one_kept(tmp_path, monkeypatch):
    import os
    import time

    from train.deepspeed_cpu import STALE_BUILD_LOCK_S, clear_stale_build_lock
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "cpu_adam" / "lock"
    lock.parent.mkdir()
    lock.touch()
    clear_stale_build_lock("cpu_adam")
    assert lock.exists()  # a build in progress: wait for it
    old = time.time() - STALE_BUILD_LOCK_S - 60
    os.utime(lock, (old, old))
    clear_stale_build_lock("cpu_adam")
    assert not lock.exists()
    clear_stale_build_lock("cpu_adam")  # no lock: nothing to do


def test_deepspeed_config_is_fp32_zero_with_one_clipping_owner():
    from train.deepspeed_cpu import deepspeed_config

    c = deepspeed_config(2, grad_clip=0.5, cpu=True)
    assert c["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in c["zero_optimization"]
    assert c["gradient_clipping"] == 0.5 and c["train_micro_batch_size_per_gpu"] == 1
    assert "fp16" not in c and "bf16" not in c and "gradient_accumulation_steps" not in c
    c = deepspeed_config(3, offload=True, cpu=True, extra={"zero_optimization": {"stage3_max_live_parameters": 7}})
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert z["stage3_max_live_parameters"] == 7 and z["offload_optimizer"]["pin_memory"] is False
    assert "offload_param" not in deepspeed_config(2, offload=True)["zero_optimization"]


@pytest.mark.parametrize("bad, match", [({"bf16": {"enabled": True}}, "precision"),
                                        ({"fp16": {"enabled": True}}, "precision"),
                                        ({"gradient_accumulation_steps": 4}, "data.accumulate")])
def test_deepspeed_config_refuses_a_second_owner(bad, match):
    from train.deepspeed_cpu import deepspeed_config

    with pytest.raises(ValueError, match=match):
        deepspeed_config(2, extra=bad)


def test_deepspeed_config_refuses_other_stages():
    from train.deepspeed_cpu import deepspeed_config

    with pytest.raises(ValueError, match="stage"):
        deepspeed_config(1)


def test_build_strategy_by_name(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy

    from train.deepspeed_cpu import HorseDeepSpeedStrategy
    from train.strategies import build_strategy

    monkeypatch.setenv("HORSE_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        def strategy(*overrides):
            return build_strategy(compose("train", overrides=[*TINY_ARGS, *overrides]))
        ddp = strategy("trainer=ddp")
        assert isinstance(ddp, DDPStrategy) and ddp._process_group_backend == "gloo"
        fsdp = strategy("trainer=fsdp2")
        assert isinstance(fsdp, ModelParallelStrategy) and fsdp._data_parallel_size == 2
        assert fsdp._tensor_parallel_size == 1
        z3 = strategy("trainer=deepspeed_zero3", "trainer.offload=true", "optim.grad_clip=0.25")
        assert isinstance(z3, HorseDeepSpeedStrategy) and isinstance(z3, DeepSpeedStrategy)
        assert z3.zero_stage_3 and z3.cpu and z3.cpu_adam and z3.config["gradient_clipping"] == 0.25
        assert z3.clips_gradients and z3._process_group_backend == "gloo"
        assert strategy("trainer=cpu") == "auto"
    import os
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "torch_extensions")


def test_configure_model_applies_checkpointing_and_compile_once():
    from horse.model import DiTModel, get_config
    from horse.training import TaskConfig
    from train.module import DiTTrainingModule

    model = DiTModel(get_config("demo", num_layers=2, hidden_size=64, head_dim=32, num_query_groups=1,
                                mm_layers=[0, 1], gelu7_layers=[0]))
    module = DiTTrainingModule(model, TaskConfig(caption_dropout=0.0), {"lr": 1e-3, "total_steps": 10}, seed=0,
                               null_text=None, activation_checkpointing=True, compile_layers=True)
    module.configure_model()
    module.configure_model()  # idempotent: Lightning may call it again
    for layer in model.block.layers:
        assert layer._horse_checkpointed and layer._compiled_call_impl is not None
    keys = set(model.state_dict())
    assert keys == set(DiTModel(model.config).state_dict())  # names untouched by the wrapping
