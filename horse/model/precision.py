"""The precision policy: the one place where compute dtypes are decided.

Parameters are always fp32 master weights. The policy casts activations and
weights at the cast points of the release (spec section 12):

- ``mixed`` (the release): block matmuls take bf16 inputs and bf16 weights and
  produce bf16 outputs; the residual stream, norms, RoPE, gating, adapter and
  heads stay fp32; attention takes bf16 q/k/v and returns a bf16 output.
- ``fp32``: every one of those casts is fp32 (the CPU default; bf16 matmuls are
  about 2x slower than fp32 on CPUs without AMX).

Trainers must not wrap the model in a second autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POLICIES = ("mixed", "fp32")


@dataclass(frozen=True)
class PrecisionPolicy:
    name: str = "fp32"

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown precision policy {self.name!r}; choose one of {POLICIES}")

    @property
    def matmul_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "mixed" else torch.float32

    @property
    def attention_dtype(self) -> torch.dtype:
        return self.matmul_dtype


def get_policy(policy: "str | PrecisionPolicy") -> PrecisionPolicy:
    return policy if isinstance(policy, PrecisionPolicy) else PrecisionPolicy(policy)
