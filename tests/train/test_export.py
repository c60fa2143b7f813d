"""``horse export``: a tiny run's checkpoint -> a horse checkpoint folder that ``horse generate`` turns into an
MP4; weights picked and recorded in the model card; sharded EMA and the FSDP2 (DCP) layout consolidated."""

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).absolute().parents[2]
TINY_MODEL = {"num_layers": 2, "hidden_size": 32, "head_dim": 16, "num_query_groups": 1, "mm_layers": [0],
              "gelu7_layers": [0]}
TINY = [*(f"+model.overrides.{k}={v}" for k, v in TINY_MODEL.items()),
        "data.num_train=8", "data.num_val=2", "data.num_test=1", "data.micro_batch=2", "data.num_workers=0",
        "data.shapes.num_frames=8", "validation.num_prompts=0", "logger.wandb.enabled=false",
        "trainer.log_every_n_steps=1", "trainer.threads=1", "trainer.max_steps=4",
        "trainer.checkpoint_every_n_steps=2", "validation.every_n_steps=2"]


def tiny_cfg(root: Path, *overrides: str, name: str = "run"):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"output_root={root}", f"name={name}", *overrides])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 4-step tiny run (checkpoints at 2 and 4, validated at both), trained once for the module."""
    from train.app import run

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HORSE_CACHE", str(tmp_path_factory.mktemp("horse-cache")))
        mp.setenv("WANDB_MODE", "offline")
        run(tiny_cfg(root))
    return root / "run"


def lightning_state(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / f"checkpoints/step-{step}/state.ckpt", map_location="cpu", weights_only=False)


def exported(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file
    return json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")


def test_export_then_generate_an_mp4(run_dir, tmp_path):
    import av

    from horse.cli import main

    out = tmp_path / "model"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    mp4 = tmp_path / "clip.mp4"
    assert main(["generate", "--checkpoint", str(out), "--prompt", "a red circle moves left", "-o", str(mp4),
                 "--steps", "2", "--seed", "0", "--no-progress"]) == 0
    with av.open(str(mp4)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 8  # 1 s at the demo codec's native 8 fps


def test_weights_are_the_checkpoints_raw_or_ema_tensors(run_dir, tmp_path):
    from train.export import export_run

    state = lightning_state(run_dir, 4)
    raw = {k[len("model."):]: v for k, v in state["state_dict"].items()}
    shadow = state["horse"]["ema"]["shadow"]
    _, raw_out = exported(export_run(run_dir, tmp_path / "raw", weights="raw"))
    _, ema_out = exported(export_run(run_dir, tmp_path / "ema", weights="ema"))
    assert raw_out.keys() == raw.keys() == ema_out.keys()
    assert all(torch.equal(raw_out[k], raw[k]) for k in raw)
    assert all(torch.equal(ema_out[k], shadow[k] if k in shadow else raw[k]) for k in raw)
    assert any(not torch.equal(shadow[k], raw[k]) for k in shadow)
    _, bf16 = exported(export_run(run_dir, tmp_path / "bf16", weights="raw", dtype="bf16"))
    assert all(bf16[k].dtype == torch.bfloat16 and torch.equal(bf16[k], raw[k].bfloat16()) for k in raw)
    _, step2 = exported(export_run(run_dir, tmp_path / "step2", step=2, weights="raw"))
    old = lightning_state(run_dir, 2)["state_dict"]
    assert all(torch.equal(step2[k], old["model." + k]) for k in raw)


def test_model_card_records_data_steps_losses_and_weights(run_dir, tmp_path):
    from train.export import export_run

    before = datetime.now().astimezone()
    config, _ = exported(export_run(run_dir, tmp_path / "model"))
    card = config["model_card"]
    marker = json.loads((run_dir / "checkpoints/step-4/COMPLETE").read_text())
    val = marker["validation"]
    assert card["training"]["steps"] == 4 and card["training"]["samples_per_step"] == 2
    assert card["data"]["config"]["num_train"] == 8 and card["data"]["description"]["dataset"] == "shapes_av"
    assert card["losses"]["validation"] == {k: val[k] for k in ("step", "raw", "ema")}
    losses = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    assert card["losses"]["train"]["last"] == losses[-1]["loss"] and card["losses"]["train"]["step"] == 4
    assert card["losses"]["train"]["mean_last_4"] == pytest.approx(sum(e["loss"] for e in losses) / 4)
    best = "ema" if val["ema"]["loss"] <= val["raw"]["loss"] else "raw"
    assert card["weights"]["used"] == best and "validation at step 4" in card["weights"]["reason"]
    assert datetime.fromisoformat(card["export"]["time"]) >= before.replace(microsecond=0)
    assert card["export"]["horse_version"] and card["export"]["checkpoint"] == "checkpoints/step-4"
    assert card["description"] == "horse demo DiT trained on shapes-AV"  # the codec config's card, kept
    assert config["model"] == {"preset": "demo", "caption_modulation": True, "video_position_embedding": True,
                               **TINY_MODEL}  # the demo config's own overrides, merged with the test's


def _copy_run(run_dir: Path, dst: Path, validation: dict | None = None, ema: bool = True) -> Path:
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("wandb", "hydra"))
    step = dst / "checkpoints/step-4"
    marker = json.loads((step / "COMPLETE").read_text())
    marker["validation"] = validation or {}
    (step / "COMPLETE").write_text(json.dumps(marker))
    if not ema:
        state = torch.load(step / "state.ckpt", weights_only=False)
        state["horse"]["ema"] = None
        torch.save(state, step / "state.ckpt")
    return dst


@pytest.mark.parametrize("raw_loss, ema_loss, used", [(2.0, 1.0, "ema"), (1.0, 2.0, "raw"), (None, None, "ema")])
def test_auto_picks_ema_by_validation_loss(run_dir, tmp_path, raw_loss, ema_loss, used):
    from train.export import export_run

    val = {"step": 4, "raw": {"loss": raw_loss}, "ema": {"loss": ema_loss}} if raw_loss else None
    run = _copy_run(run_dir, tmp_path / "run", validation=val)
    config, _ = exported(export_run(run, tmp_path / "model"))
    assert config["model_card"]["weights"]["used"] == used


def test_run_without_ema_exports_raw_and_refuses_ema(run_dir, tmp_path):
    from train.export import export_run

    run = _copy_run(run_dir, tmp_path / "run", ema=False)
    config, _ = exported(export_run(run, tmp_path / "model"))
    assert config["model_card"]["weights"] == {"used": "raw", "reason": "the run kept no EMA", "dtype": "fp32"}
    with pytest.raises(ValueError, match="no EMA"):
        export_run(run, tmp_path / "other", weights="ema")


def test_clear_errors(run_dir, tmp_path):
    from horse.cli import main
    from train.export import export_run

    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint of step 3.*\[2, 4\]"):
        export_run(run_dir, tmp_path / "a", step=3)
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        export_run(tmp_path, tmp_path / "b")
    run = _copy_run(run_dir, tmp_path / "run")
    cfg = (run / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 48")
    (run / "config.yaml").write_text(cfg)
    with pytest.raises(ValueError, match=r"does not match the run's model config.*adapter\.video_embedder\.weight"):
        export_run(run, tmp_path / "c")
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "d")]) == 2
    export_run(run_dir, tmp_path / "e")
    with pytest.raises(FileExistsError):
        export_run(run_dir, tmp_path / "e")
    export_run(run_dir, tmp_path / "e", overwrite=True)


# ---- sharded layouts ------------------------------------------------------------------------------------------
def _fsdp2_shards(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    """FSDP2's Shard(0): torch.chunk along dim 0 (uneven: the last ranks get fewer rows, maybe none)."""
    chunks = list(torch.chunk(tensor, world, dim=0))
    return chunks + [tensor[:0]] * (world - len(chunks))


def _zero3_partitions(tensor: torch.Tensor, world: int) -> list[torch.Tensor]:
    """ZeRO-3: the flat parameter zero-padded to a multiple of ``world``, one equal piece per rank."""
    size = -(-tensor.numel() // world)
    flat = torch.cat([tensor.reshape(-1), tensor.new_zeros(size * world - tensor.numel())])
    return list(flat.split(size))


@pytest.mark.parametrize("layout", ["fsdp2", "zero3"])
def test_sharded_ema_is_consolidated(run_dir, tmp_path, layout):
    from train.checkpointing import save_rank_state
    from train.export import read_step

    world = 3  # uneven on purpose: 32 rows over 3 ranks
    run = _copy_run(run_dir, tmp_path / "run")
    step = run / "checkpoints/step-4"
    state = torch.load(step / "state.ckpt", weights_only=False)
    shadow = state["horse"]["ema"]["shadow"]
    state["horse"]["ema"] = None  # sharded EMA lives in the rank files only
    torch.save(state, step / "state.ckpt")
    for leftover in step.glob("rank-*.pt"):
        leftover.unlink()
    marker = json.loads((step / "COMPLETE").read_text())
    (step / "COMPLETE").write_text(json.dumps({**marker, "world_size": world}))
    split = _fsdp2_shards if layout == "fsdp2" else _zero3_partitions
    pieces = {k: split(v, world) for k, v in shadow.items()}
    for rank in range(world):
        ema = {"beta": 0.995, "warmup": True, "updates": 4, "shadow": {k: p[rank] for k, p in pieces.items()}}
        save_rank_state(step, rank, world, {"loader": None, "ema": ema})
    shapes = {k[len("model."):]: v.shape for k, v in state["state_dict"].items()}
    loaded = read_step(step, shapes)
    assert loaded.ema.keys() == shadow.keys() and all(torch.equal(loaded.ema[k], shadow[k]) for k in shadow)
    (step / f"rank-{world - 1}-of-{world}.pt").unlink()
    with pytest.raises(FileNotFoundError, match="EMA shards are incomplete"):
        read_step(step, shapes)


def test_dcp_checkpoint_exports_like_the_lightning_file(run_dir, tmp_path):
    """An FSDP2 run's state.ckpt is a torch.distributed.checkpoint folder (Lightning's ModelParallelStrategy
    writes {"state_dict", "optimizer_0"} with DCP and the rest to meta.pt); here written in one process."""
    import torch.distributed.checkpoint as dcp

    from train.export import export_run

    run = _copy_run(run_dir, tmp_path / "run")
    step = run / "checkpoints/step-4"
    state = torch.load(step / "state.ckpt", weights_only=False)
    (step / "state.ckpt").unlink()
    dcp.save({"state_dict": state.pop("state_dict"), "optimizer_0": state.pop("optimizer_states")[0]},
             checkpoint_id=str(step / "state.ckpt"))
    torch.save(state, step / "state.ckpt" / "meta.pt")
    for weights in ("raw", "ema"):
        _, ours = exported(export_run(run, tmp_path / f"dcp-{weights}", weights=weights))
        _, reference = exported(export_run(run_dir, tmp_path / f"file-{weights}", weights=weights))
        assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


@pytest.mark.slow
def test_sharded_runs_export_the_same_weights(tmp_path, monkeypatch):
    """The same 2-rank run under FSDP2 (DCP + DTensor EMA shards), DeepSpeed ZeRO-3 (zero_to_fp32 +
    partitioned EMA) and ZeRO-2 (whole EMA on rank 0) exports the same raw and EMA weights: independent
    consolidations agree."""
    import os
    import subprocess
    import sys

    from train.datasets import build_data
    from train.export import export_run

    monkeypatch.setenv("HORSE_CACHE", str(tmp_path / "cache"))
    build_data(tiny_cfg(tmp_path).data)  # once, before two ranks would race to build it
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    weights = {}
    strategies = ("fsdp2", "deepspeed_zero3", "deepspeed_zero2")
    for strategy in strategies:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                   *TINY, f"output_root={tmp_path}", f"name={strategy}", f"trainer={strategy}", "trainer.devices=2"]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for kind in ("raw", "ema"):
            config, weights[strategy, kind] = exported(export_run(tmp_path / strategy, tmp_path / f"{strategy}-{kind}",
                                                                  weights=kind))
        assert config["model_card"]["training"]["world_size"] == 2
    for kind in ("raw", "ema"):
        a = weights["fsdp2", kind]
        for other in strategies[1:]:
            b = weights[other, kind]
            assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a), other
    raw, ema = weights["fsdp2", "raw"], weights["fsdp2", "ema"]
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
