"""A run with ``trainer.cosine_ends`` is the same run as one finished at the first end and resumed with more steps:
per-step losses bit-identical (the default demo run is 2,400 steps on one cosine, then 800 on a second)."""

from __future__ import annotations

import math

import pytest
import torch

from horse.training.optim import lr_lambda

from tests.train.conftest import read_losses, run_train, train_argv, train_env

FIRST_END, TOTAL = 4, 7


def test_cosine_ends_restart_on_the_longer_cosine_and_ignore_ends_past_the_run():
    plain, stretched = lr_lambda(2, 10, 0.1), lr_lambda(2, 10, 0.1, cosine_ends=[6])
    assert [stretched(s) for s in range(7)] == [lr_lambda(2, 6, 0.1)(s) for s in range(7)]
    assert stretched(6) == pytest.approx(0.1)  # the first cosine's floor, as a resumed run's first step
    assert [stretched(s) for s in range(7, 12)] == [plain(s) for s in range(7, 12)]
    assert stretched(7) > 0.1 and stretched(10) == pytest.approx(0.1)
    assert math.isclose(lr_lambda(2, 10, 0.1, cosine_ends=[10, 40])(5), plain(5))  # ends >= total do not apply
    with pytest.raises(ValueError, match="after the warmup"):
        lr_lambda(5, 10, cosine_ends=[3])


def test_a_run_with_a_cosine_end_equals_a_finished_run_resumed_with_more_steps(tmp_path, horse_cache):
    env = train_env(horse_cache)
    common = ["trainer.checkpoint_every_n_steps=100", "validation.every_n_steps=0"]
    runs = [("resumed", f"trainer.max_steps={FIRST_END}"), ("resumed", f"trainer.max_steps={TOTAL}"),
            ("one_run", f"trainer.max_steps={TOTAL}", f"trainer.cosine_ends=[{FIRST_END}]")]
    for index, (name, *extra) in enumerate(runs):
        run_train(train_argv(tmp_path, name, *extra, *common), env, tmp_path / f"{index}.log")
    resumed, one_run = dict(read_losses(tmp_path / "resumed")), dict(read_losses(tmp_path / "one_run"))
    assert sorted(one_run) == list(range(1, TOTAL + 1)) and sorted(resumed) == sorted(one_run)
    for step in one_run:
        assert torch.equal(torch.tensor(resumed[step]), torch.tensor(one_run[step])), f"step {step} differs"
