"""Training building blocks shared by every trainer: the flow-matching task, EMA, optimiser set-up."""

from .ema import EMA
from .optim import build_optimizer, lr_lambda
from .task import FlowMatchingTask, StepTerms, TaskConfig, count_tokens

__all__ = ["EMA", "FlowMatchingTask", "StepTerms", "TaskConfig", "build_optimizer", "count_tokens", "lr_lambda"]
