"""flex_attention backend for packed sequences (a GPU path; compiled kernels need CUDA).

Sample boundaries become a document mask in a ``BlockMask``, so the kernel skips
cross-sample blocks instead of materialising a mask. On CPU, eager flex_attention
falls back to a reference implementation that is only fit for tests.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=8)
def _block_mask(seqlens: tuple[int, ...], device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    doc = torch.repeat_interleave(torch.arange(len(seqlens), device=device),
                                  torch.tensor(seqlens, device=device))

    def same_sample(b, h, q, k):
        return doc[q] == doc[k]
    n = sum(seqlens)
    return create_block_mask(same_sample, B=None, H=None, Q_LEN=n, KV_LEN=n, device=device)


def flex_packed_attention(q, k, v, seqlens: list[int], groups: int) -> torch.Tensor:
    """q ``[N, H, d]``, k/v ``[N, Hkv, d]`` -> ``[N, H, d]`` with block-diagonal attention."""
    from torch.nn.attention.flex_attention import flex_attention

    mask = _block_mask(tuple(seqlens), str(q.device))
    q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))
    out = flex_attention(q, k, v, block_mask=mask, enable_gqa=groups > 1)
    return out[0].transpose(0, 1)
