"""Exact resume: runs SIGKILLed between checkpoints and in the middle of a checkpoint save continue
to per-step losses bit-identical (``torch.equal``) to an uninterrupted run's.

Settings that usually break exactness are all on: EMA, gradient accumulation (2 micro-batches),
a loader worker, validation passes (with EMA swaps and sample generation) inside the replayed
windows, caption dropout. One chain of runs covers both kills:

  A   uninterrupted, steps 1..8 (checkpoints every 2 steps, validation every 3)
  B1  killed after step 3 (not a checkpoint step)                 -> latest complete: step-2
  B2  resumes from step-2, killed inside the save of step 6       -> latest complete: step-4
  B3  resumes from step-4 (a checkpoint written by a resumed run) -> runs to step 8

The kills land at exact points through the checkpointer's test hooks
(``HORSE_TEST_SLEEP_AFTER_STEP`` / ``HORSE_TEST_SLEEP_IN_SAVE``, see train/checkpointing.py).
Every loss B's runs recorded, replays included, must equal A's at that step; the final
validation (raw and EMA weights) must too.
"""

from __future__ import annotations

import json

import pytest
import torch

from train.checkpointing import SLEEP_AFTER_STEP_ENV, SLEEP_IN_SAVE_ENV, complete_checkpoints

from tests.train.conftest import read_losses, run_train, run_until_killed, train_argv, train_env

MAX_STEPS = 8
SETTINGS = [f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every_n_steps=2", "validation.every_n_steps=3"]
KILL_AFTER_STEP = 3
KILL_IN_SAVE_OF = 6
SLEEP = "600"  # seconds: far longer than the test waits; the test kills the run during it


def _losses_by_step(rows: list[tuple[int, float]]) -> dict[int, float]:
    return {step: loss for step, loss in rows}


def _steps(run_dir) -> list[int]:
    return [step for step, _ in complete_checkpoints(run_dir)]


def check_exact_resume(tmp_path, horse_cache, strategy: str, nproc: int) -> None:
    extra = [*SETTINGS, f"trainer={strategy}"]
    root = tmp_path / "runs"

    def argv(name):
        return train_argv(root, name, *extra, nproc=nproc)

    run_train(argv("A"), train_env(horse_cache), tmp_path / "A.log")
    a_dir, b_dir = root / "A", root / "B"
    reference = _losses_by_step(read_losses(a_dir))
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))

    run_until_killed(argv("B"), train_env(horse_cache, **{SLEEP_AFTER_STEP_ENV: f"{SLEEP}@{KILL_AFTER_STEP}"}),
                     tmp_path / "B1.log", f"{SLEEP_AFTER_STEP_ENV}: sleeping")
    assert _steps(b_dir) == [2]
    assert max(step for step, _ in read_losses(b_dir)) == KILL_AFTER_STEP

    run_until_killed(argv("B"), train_env(horse_cache, **{SLEEP_IN_SAVE_ENV: f"{SLEEP}@{KILL_IN_SAVE_OF}"}),
                     tmp_path / "B2.log", f"{SLEEP_IN_SAVE_ENV}: sleeping")
    partial = b_dir / "checkpoints" / f".step-{KILL_IN_SAVE_OF}.tmp"
    assert (partial / "state.ckpt").exists() and not (partial / "COMPLETE").exists(), "the kill missed the save"
    assert _steps(b_dir) == [2, 4]

    run_train(argv("B"), train_env(horse_cache), tmp_path / "B3.log")
    assert "resuming from" in (tmp_path / "B3.log").read_text() and "step-4" in (tmp_path / "B3.log").read_text()
    assert not partial.exists()
    assert _steps(b_dir)[-1] == MAX_STEPS

    rows = read_losses(b_dir)
    steps = [s for s, _ in rows]
    # B1: 1..3, B2: 3..6 (resumed from step-2), B3: 5..8 (resumed from step-4)
    assert steps == [1, 2, 3, 3, 4, 5, 6, 5, 6, 7, 8], steps
    got = torch.tensor([loss for _, loss in rows], dtype=torch.float64)
    want = torch.tensor([reference[s] for s in steps], dtype=torch.float64)
    assert torch.equal(got, want), f"losses differ after resume:\n{got.tolist()}\n{want.tolist()}"

    a_val = {v["step"]: v for v in json.loads((a_dir / "summary.json").read_text())["validation"]}
    b_val = {v["step"]: v for v in json.loads((b_dir / "summary.json").read_text())["validation"]}
    assert sorted(b_val) == [6, MAX_STEPS]
    for step in b_val:
        for weights in ("raw", "ema"):
            assert b_val[step][weights] == a_val[step][weights], (step, weights)


def test_exact_resume_ddp(tmp_path, horse_cache):
    check_exact_resume(tmp_path, horse_cache, "ddp", nproc=2)


def test_exact_resume_fsdp2(tmp_path, horse_cache):
    check_exact_resume(tmp_path, horse_cache, "fsdp2", nproc=2)


@pytest.mark.slow
def test_exact_resume_deepspeed_zero3(tmp_path, horse_cache):
    check_exact_resume(tmp_path, horse_cache, "deepspeed_zero3", nproc=2)
