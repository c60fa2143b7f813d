"""Shared fixtures for the training-app tests: a tiny model and dataset, and launching ``train.py``.

Runs are real ``python train.py`` processes (two ranks through torchrun for the distributed
strategies) on a 2-layer, 64-wide DiT and 16x16, 4-frame shapes-AV clips, so a step takes
~0.1 s and a run's cost is mostly process start-up (torch + lightning + deepspeed imports).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY_MODEL = "{num_layers:2,hidden_size:64,head_dim:32,num_query_groups:1,mm_layers:[0,1],gelu7_layers:[0]}"
TINY_ARGS = [
    f"++model.overrides={TINY_MODEL}",
    "data.num_train=32", "data.num_val=4", "data.num_test=4",
    "data.shapes={num_frames:4,fps:8,height:16,width:16}",
    "data.micro_batch=2", "data.accumulate=2", "data.num_workers=1",
    "validation.num_prompts=1", "validation.sampler.steps=2", "validation.max_samples=2",
    "logger.wandb.enabled=false", "trainer.threads=1", "trainer.log_every_n_steps=1",
    "objective.caption_dropout=0.5", "optim.warmup_steps=2",
]
LAUNCH_TIMEOUT = 240  # seconds for one run, start-up included, on a loaded 2-core machine


@pytest.fixture(scope="session")
def horse_cache(tmp_path_factory) -> Path:
    """A private HORSE_CACHE for the session, with the tiny dataset generated and latent-cached once
    (so concurrent ranks only ever read it)."""
    root = tmp_path_factory.mktemp("horse_cache")
    old = os.environ.get("HORSE_CACHE")
    os.environ["HORSE_CACHE"] = str(root)
    try:
        from hydra import compose, initialize_config_dir

        from train.datasets import build_data
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            build_data(compose("train", overrides=TINY_ARGS).data)
        yield root
    finally:
        if old is None:
            os.environ.pop("HORSE_CACHE", None)
        else:
            os.environ["HORSE_CACHE"] = old


def train_argv(output_root: Path, name: str, *extra: str, nproc: int = 1) -> list[str]:
    """``python train.py`` with the tiny settings; ``nproc`` > 1 runs it under torchrun on one node."""
    args = ["train.py", f"name={name}", f"output_root={output_root}", *TINY_ARGS, *extra]
    if nproc > 1:
        # torchrun starts both ranks at once (Lightning's own launcher would start rank 1 only
        # after rank 0 built its data and model); a fixed free-ish port keeps rendezvous simple
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                *args, f"trainer.devices={nproc}"]
    return [sys.executable, *args]


def train_env(horse_cache: Path, **extra: str) -> dict:
    env = dict(os.environ, HORSE_CACHE=str(horse_cache), WANDB_MODE="offline", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    # DeepSpeed's compiled ops outlive the session's cache: compiled once per machine (~1-2 min)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "horse" / "torch_extensions"))
    env.update(extra)
    return env


def run_train(argv: list[str], env: dict, log: Path, timeout: float = LAUNCH_TIMEOUT) -> None:
    """Run to the end; fail with the log's tail if it does not exit 0."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            pytest.fail(f"{' '.join(argv[-4:])} timed out after {timeout}s:\n{tail(log)}")
    if code != 0:
        pytest.fail(f"train.py exited {code}:\n{tail(log)}")


def run_until_killed(argv: list[str], env: dict, log: Path, line: str, timeout: float = LAUNCH_TIMEOUT) -> None:
    """Start a run, wait for ``line`` in its output (a test hook announcing its sleep), SIGKILL it all."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while line not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before printing {line!r}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {line!r} after {timeout}s:\n{tail(log)}")
            time.sleep(0.05)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group (launcher, every rank, loader workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def read_records(run_dir: Path) -> list[dict]:
    """Every line of ``losses.jsonl`` ({step, loss, grad_norm}), replays after a resume included."""
    path = run_dir / "losses.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def read_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_records(run_dir)]
