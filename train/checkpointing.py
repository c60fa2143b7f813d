"""Run folders and checkpoints that survive SIGKILL at any moment.

``outputs/<name>/checkpoints/step-N/`` is written as ``.step-N.tmp/`` (Lightning's
state, a file or a sharded folder, plus per-rank EMA shards) and renamed into
place only after a ``COMPLETE`` marker is written, so a run killed mid-save
resumes from the previous complete step. The newest ``keep_last`` stay.
SIGTERM / SIGUSR1 (preemption) save at the end of the current step and stop.

Every rank also writes ``rank-R-of-W.pt`` (``LightningModule.rank_state()``: its loader
position and, under ZeRO-3/FSDP2, its EMA shard), because the strategies keep the
module's extra checkpoint state from rank 0 only.

Test hooks (tests/train/test_exact_resume.py SIGKILLs runs at exact points with them):
``HORSE_TEST_SLEEP_IN_SAVE=<seconds>[@<step>]`` makes rank 0 sleep after every rank has
written its state and before the marker (in the save of ``<step>`` only, when given);
``HORSE_TEST_SLEEP_AFTER_STEP=<seconds>@<step>`` makes it sleep at the end of that step
(after any validation and save). Each logs a ``sleeping`` warning first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import torch

from horse.checkpoint.save import fsync_path

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
STATE = "state.ckpt"
STEP_RE = re.compile(r"^step-(\d+)$")
SLEEP_IN_SAVE_ENV, SLEEP_AFTER_STEP_ENV = "HORSE_TEST_SLEEP_IN_SAVE", "HORSE_TEST_SLEEP_AFTER_STEP"


def rank_state_path(folder: str | Path, rank: int, world_size: int) -> Path:
    return Path(folder) / f"rank-{rank}-of-{world_size}.pt"


def save_rank_state(folder: str | Path, rank: int, world_size: int, state: dict) -> Path:
    path = rank_state_path(folder, rank, world_size)
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_rank_state(folder: str | Path, rank: int, world_size: int) -> dict | None:
    """This rank's state from a step folder; None for a checkpoint without per-rank files."""
    folder = Path(folder)
    path = rank_state_path(folder, rank, world_size)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False)
    others = sorted(p.name for p in folder.glob("rank-*-of-*.pt"))
    if others:
        raise ValueError(f"{folder} was saved by a different number of processes ({others[0]}, ...) than this run's "
                         f"{world_size}: resume with the same trainer.devices x trainer.num_nodes")
    return None


def _test_sleep(env: str, step: int) -> None:
    """The test hooks of the module docstring: ``<seconds>[@<step>]`` in ``env``."""
    value = os.environ.get(env, "")
    if not value:
        return
    seconds, _, only = value.partition("@")
    if float(seconds) > 0 and (not only or int(only) == step):
        log.warning("%s: sleeping %ss at step %d", env, seconds, step)
        time.sleep(float(seconds))


def complete_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / "checkpoints"
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = STEP_RE.match(p.name)
            if m and (p / MARKER).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1][1] if found else None


def clean_partial(run_dir: str | Path) -> None:
    """Remove leftovers of saves that were killed before completing."""
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for p in folder.glob(".step-*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


class RunCheckpointer(L.Callback):
    def __init__(self, run_dir: str | Path, every_n_steps: int, keep_last: int = 3, save_on_signal: bool = True):
        if every_n_steps < 1 or keep_last < 1:
            raise ValueError("checkpoint every_n_steps and keep_last must be >= 1")
        self.run_dir = Path(run_dir)
        self.every, self.keep_last, self.save_on_signal = every_n_steps, keep_last, save_on_signal
        self._signal: int | None = None
        self._previous = {}
        self.last_validation: dict = {}

    # ---- signals ----------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if not self.save_on_signal:
            return
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # only the main thread may install handlers
                log.warning("not in the main thread: %s will not save a checkpoint before stopping",
                            signal.Signals(sig).name)

    def _on_signal(self, signum, frame) -> None:
        log.warning("received signal %s: saving a checkpoint at the end of this step, then stopping", signum)
        self._signal = signum

    def on_train_end(self, trainer, pl_module) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # ---- saving -----------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        flag = torch.tensor([1 if self._signal is not None else 0])
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="sum")
        preempted = bool(flag.item())
        if step % self.every == 0 or preempted or step >= (trainer.max_steps or 0) > 0:
            self.save(trainer, pl_module, step)
        if preempted:
            trainer.should_stop = True
        if trainer.is_global_zero:
            _test_sleep(SLEEP_AFTER_STEP_ENV, step)

    def save(self, trainer, pl_module, step: int) -> Path:
        folder = self.run_dir / "checkpoints"
        final = folder / f"step-{step}"
        if (final / MARKER).is_file():
            return final
        tmp = folder / f".step-{step}.tmp"
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        trainer.strategy.barrier("horse-ckpt-mkdir")
        start = time.perf_counter()
        trainer.save_checkpoint(str(tmp / STATE))
        if hasattr(pl_module, "rank_state"):
            save_rank_state(tmp, trainer.global_rank, trainer.world_size, pl_module.rank_state())
        trainer.strategy.barrier("horse-ckpt-written")
        if trainer.is_global_zero:
            _test_sleep(SLEEP_IN_SAVE_ENV, step)
            meta = {"step": step, "time": time.time(), "world_size": trainer.world_size,
                    "strategy": type(trainer.strategy).__name__, "validation": self.last_validation}
            marker = tmp / MARKER
            with open(marker, "w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            fsync_path(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync_path(folder)
            self._prune()
            log.info("saved %s in %.1fs", final, time.perf_counter() - start)
        trainer.strategy.barrier("horse-ckpt-done")
        return final

    def _prune(self) -> None:
        found = complete_checkpoints(self.run_dir)
        for _, path in found[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
