"""Attention over a packed sequence: one entry point, several backends.

Every sample of a pack attends only within itself. Nothing here ever builds an
N x N mask or score matrix for the whole pack: the ``sdpa`` backend runs
torch SDPA per sample (samples of equal length in one batched call), and local
layers run SDPA per query segment over the gathered keys of that segment.

Local attention (spec section 6) comes as ``(q_range, k_range)`` pairs over the
packed sequence; a query in several q-ranges attends to the union of their
k-ranges under one softmax. ``LocalAttentionPlan`` turns the pairs into disjoint
query segments, each with its own key index set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flex")


@dataclass
class LocalAttentionPlan:
    """Disjoint query segments ``[start, end)`` with the key indices each one attends to."""

    segments: list[tuple[int, int, torch.Tensor]]
    # per segment, its k-ranges as given (unmerged, in input order): the release's fallback
    # attends to each separately and merges the bf16 partial outputs by log-sum-exp
    spans: list[list[tuple[int, int]]] | None = None

    @classmethod
    def from_ranges(cls, q_ranges, k_ranges, seq_len: int, device=None) -> "LocalAttentionPlan":
        q_ranges = torch.as_tensor(q_ranges, dtype=torch.int64).reshape(-1, 2).tolist()
        k_ranges = torch.as_tensor(k_ranges, dtype=torch.int64).reshape(-1, 2).tolist()
        if len(q_ranges) != len(k_ranges):
            raise ValueError(f"{len(q_ranges)} q-ranges but {len(k_ranges)} k-ranges: they come in pairs")
        for (qs, qe), (ks, ke) in zip(q_ranges, k_ranges):
            if not (0 <= qs < qe <= seq_len and 0 <= ks < ke <= seq_len):
                raise ValueError(f"range pair q=[{qs},{qe}) k=[{ks},{ke}) is empty or outside [0, {seq_len})")
        cuts = sorted({0, seq_len, *(b for r in q_ranges for b in r)})
        segments, all_spans = [], []
        for start, end in zip(cuts[:-1], cuts[1:]):
            spans = [k for q, k in zip(q_ranges, k_ranges) if q[0] <= start and end <= q[1]]
            if not spans:
                raise ValueError(f"queries [{start},{end}) lie in no q-range: every token needs keys")
            keys = _merge_spans(spans)
            index = torch.cat([torch.arange(s, e, device=device) for s, e in keys])
            segments.append((start, end, index))
            all_spans.append([tuple(k) for k in spans])
        return cls(segments, all_spans)


def _merge_spans(spans: list[list[int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def frame_window_ranges(num_video: int, num_frames: int, num_total: int, window: int, offset: int = 0):
    """The release's ``calc_local_qk_range`` for one sample laid out [video | audio | text].

    Video frame i sees video frames i-window..i+window plus all audio and text;
    audio and text tokens see everything.
    """
    return window_ranges(num_video, num_frames, num_total, offset, video_window=window)


def window_ranges(num_video: int, num_frames: int, num_total: int, offset: int = 0, *,
                  video_window: int | None = None, audio_frames: list[int] | None = None,
                  audio_window: int = 0):
    """(q-ranges, k-ranges) of one sample laid out [video | audio | text] with ``num_frames`` video frames.

    ``video_window``: video frame i sees video frames i-w..i+w plus all audio and text (None: everything).
    ``audio_frames``: the video frame at each audio token's time (one entry per audio token); a run of audio
    tokens at frame f then sees the video frames f-audio_window..f+audio_window plus all audio and text
    (None: everything). Text tokens see everything.
    """
    if num_frames <= 0 or num_video % num_frames:
        raise ValueError(f"{num_video} video tokens do not split into {num_frames} frames")
    per = num_video // num_frames
    num_audio = 0 if audio_frames is None else len(audio_frames)
    if num_video + num_audio > num_total:
        raise ValueError(f"{num_video} video and {num_audio} audio tokens exceed the sample's {num_total}")
    whole, after_video = (offset, offset + num_total), (offset + num_video, offset + num_total)
    q, k = [], []

    def frames(lo: int, hi: int) -> tuple[int, int]:
        return offset + max(0, lo) * per, offset + min(num_frames, hi + 1) * per

    if video_window is None:
        q.append((offset, offset + num_video))
        k.append(whole)
    else:
        for i in range(num_frames):
            q.append((offset + i * per, offset + (i + 1) * per))
            k.append(frames(i - video_window, i + video_window))
        if num_total > num_video:
            q.append((offset, offset + num_video))
            k.append(after_video)
    start = offset + num_video
    if audio_frames is None:
        if num_total > num_video:
            q.append(after_video)
            k.append(whole)
        return q, k
    i = 0
    while i < num_audio:  # runs of audio tokens at the same frame
        j = i
        while j < num_audio and audio_frames[j] == audio_frames[i]:
            j += 1
        f = min(max(audio_frames[i], 0), num_frames - 1)
        q += [(start + i, start + j), (start + i, start + j)]
        k += [frames(f - audio_window, f + audio_window), after_video]
        i = j
    if num_total > num_video + num_audio:
        q.append((start + num_audio, offset + num_total))
        k.append(whole)
    return q, k


def _sdpa(q, k, v, gqa_groups: int, mask: torch.Tensor | None = None):
    """q [B, Lq, H, d], k/v [B, Lk, Hkv, d] (mask [B, 1, Lq, Lk] bool, True = attend) -> [B, Lq, H, d]."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if gqa_groups > 1:
        # query head h reads KV head h // groups
        k = k.repeat_interleave(gqa_groups, dim=1)
        v = v.repeat_interleave(gqa_groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def ranges_mask(q_ranges, k_ranges, length: int, offset: int = 0, device=None) -> torch.Tensor:
    """``[length, length]`` bool mask of one sample from (q-range, k-range) pairs in pack positions: a query
    attends to the union of the k-ranges of the pairs it is in. Dense (length² booleans): for short samples,
    where one masked SDPA call beats a call per query segment."""
    mask = torch.zeros(length, length, dtype=torch.bool, device=device)
    for (qs, qe), (ks, ke) in zip(q_ranges, k_ranges):
        mask[qs - offset:qe - offset, ks - offset:ke - offset] = True
    if not mask.any(1).all():
        raise ValueError("some queries lie in no q-range: every token needs keys")
    return mask


def packed_attention(q, k, v, seqlens: list[int], *, local: LocalAttentionPlan | None = None,
                     compute_dtype: torch.dtype | None = None, out_dtype: torch.dtype | None = None,
                     backend: str = "sdpa", lse_merge: bool = False,
                     masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Block-diagonal attention over a pack.

    q ``[N, H, d]``, k/v ``[N, Hkv, d]`` in pack order, ``seqlens`` the sample lengths.
    ``compute_dtype`` is the dtype the kernel runs in; q/k/v are first rounded to
    ``out_dtype`` when that is lower precision (bf16 inputs, fp32 softmax and
    accumulation, bf16 output: how FlashAttention computes, which the release uses).
    ``lse_merge`` reproduces the release's non-Hopper local-attention fallback: each
    k-range of a query segment is attended separately, its output rounded to
    ``out_dtype``, and the partial outputs merged by log-sum-exp in fp32 (the
    default is one softmax over the union of the ranges, as MagiAttention computes).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    out_dtype = out_dtype or q.dtype
    compute_dtype = compute_dtype or out_dtype
    q, k, v = (t.to(out_dtype).to(compute_dtype) for t in (q, k, v))
    groups = q.shape[1] // k.shape[1]
    if masks is not None:
        if local is not None:
            raise ValueError("give a local plan or per-sample masks, not both")
        out = _per_sample(q, k, v, seqlens, groups, masks)
    elif local is not None and lse_merge:
        out = _local_lse_merge(q, k, v, local, groups, out_dtype)
    elif local is not None:
        out = torch.cat([_sdpa(q[s:e][None], k[idx][None], v[idx][None], groups)[0]
                         for s, e, idx in local.segments], 0)
    elif backend == "flex":
        from .flex import flex_packed_attention
        out = flex_packed_attention(q, k, v, seqlens, groups)
    else:
        out = _per_sample(q, k, v, seqlens, groups)
    return out.to(out_dtype)


def _per_sample(q, k, v, seqlens: list[int], groups: int, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    if sum(seqlens) != q.shape[0]:
        raise ValueError(f"sample lengths sum to {sum(seqlens)} but the pack has {q.shape[0]} tokens")
    if masks is not None and [m.shape[0] for m in masks] != list(seqlens):
        raise ValueError("one [L, L] mask per sample, matching the sample lengths")
    # runs of equal-length samples are one batched SDPA call on a zero-copy view
    runs: list[tuple[int, int]] = []
    for length in seqlens:
        if runs and runs[-1][0] == length:
            runs[-1] = (length, runs[-1][1] + 1)
        else:
            runs.append((length, 1))
    sizes = [length * count for length, count in runs]
    chunks = zip(*(t.split(sizes, 0) for t in (q, k, v)))
    outs, first = [], 0
    for (length, count), qkv in zip(runs, chunks):
        mask = None if masks is None else torch.stack(masks[first:first + count])[:, None]
        outs.append(_sdpa(*(t.unflatten(0, (count, length)) for t in qkv), groups, mask).flatten(0, 1))
        first += count
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def _sdpa_with_lse(q, k, v, groups: int):
    """q [Lq, H, d], k/v [Lk, Hkv, d] -> (out [Lq, H, d], lse [Lq, H]) on the CPU flash kernel."""
    q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    else:
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        lse = torch.logsumexp(scores, -1)
        out = torch.softmax(scores, -1).to(v.dtype) @ v
    return out[0].transpose(0, 1), lse[0].transpose(0, 1)


def _local_lse_merge(q, k, v, plan: LocalAttentionPlan, groups: int, out_dtype) -> torch.Tensor:
    outs = []
    for (s, e, _), spans in zip(plan.segments, plan.spans):
        merged, merged_lse = None, None
        for ks, ke in spans:
            o, lse = _sdpa_with_lse(q[s:e], k[ks:ke], v[ks:ke], groups)
            o = o.to(out_dtype)
            if merged is None:
                merged, merged_lse = o, lse
                continue
            top = torch.maximum(merged_lse, lse)
            a, b = torch.exp(merged_lse - top), torch.exp(lse - top)
            total = a + b
            merged = merged * (a / total).unsqueeze(-1) + o * (b / total).unsqueeze(-1)
            merged_lse = torch.log(total) + top
        outs.append(merged.to(out_dtype))
    return torch.cat(outs, 0)
