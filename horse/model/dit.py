"""The daVinci-MagiHuman single-stream DiT (spec sections 2-3).

Module names and parameter shapes are those of the official checkpoints, key
for key. Tokens stay in pack order throughout; per-modality experts run on the
modality-sorted rows (see ``ModalityGroups``). There is no timestep input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import LocalAttentionPlan, packed_attention, ranges_mask, window_ranges
from .config import AUDIO, TEXT, VIDEO, DiTConfig, get_config
from .layers import ACTIVATION_FNS, ExpertLinear, ModalityGroups, MultiModalityRMSNorm
from .packing import audio_token_frames
from .precision import PrecisionPolicy, get_policy
from .rope import ElementWiseFourierEmbed, apply_rope


@dataclass
class ForwardContext:
    """Everything a layer needs besides the hidden states, built once per forward."""

    groups: ModalityGroups
    rope: torch.Tensor
    seqlens: list[int]
    local: LocalAttentionPlan | None
    policy: PrecisionPolicy
    attention_backend: str = "sdpa"
    # per-sample masks of the audio-window layers (DiTConfig.audio_attn_layers), keyed by whether the layer
    # is also local
    audio_local: dict[bool, list[torch.Tensor]] = field(default_factory=dict)
    # DiTConfig.caption_modulation: each sample's caption embedding [B, D], each token's sample [N], and the
    # latter split like the modality-sorted rows that ``groups.apply`` hands out
    caption: torch.Tensor | None = None
    sample_index: torch.Tensor | None = None
    sample_chunks: list[torch.Tensor] | None = None

    def set_caption(self, caption: torch.Tensor, sample_index: torch.Tensor) -> "ForwardContext":
        g = self.groups
        self.caption, self.sample_index = caption, sample_index
        self.sample_chunks = list((sample_index if g.sorted else sample_index[g.perm]).split(g.counts))
        return self


@dataclass
class TokenRouting:
    """TREAD (Krause et al. 2025): the tokens not in ``keep`` skip layers ``start..end-1``.

    They leave after layer ``start - 1`` and re-enter before layer ``end`` with their hidden
    state unchanged. Training only; the trainer decides the selection.
    """

    start: int
    end: int
    keep: torch.Tensor  # [N] bool


@dataclass
class DiTOutput:
    out: torch.Tensor
    adapter: torch.Tensor | None = None
    rope: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] = field(default_factory=list)


def modulate(normed: torch.Tensor, mod: torch.Tensor | None, ctx: ForwardContext, j: int) -> torch.Tensor:
    """adaLN: ``normed * (1 + scale) + shift`` for the rows of modality ``j``, with ``mod = [shift | 1 + scale]``
    per sample ``[B, 2D]`` (None: unchanged)."""
    if mod is None:
        return normed
    shift, gain = mod.index_select(0, ctx.sample_chunks[j]).chunk(2, dim=1)
    return torch.addcmul(shift, normed, gain)


class Attention(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        m = cfg.num_experts(layer)
        self.cfg, self.is_local = cfg, layer in cfg.local_attn_layers
        self.is_audio_local = layer in cfg.audio_attn_layers
        self.pre_norm = MultiModalityRMSNorm(cfg.hidden_size, m, cfg.norm_eps)
        self.linear_qkv = ExpertLinear(cfg.hidden_size, cfg.qkv_width, m)
        self.linear_proj = ExpertLinear(cfg.num_heads_q * cfg.head_dim, cfg.hidden_size, m)
        self.q_norm = MultiModalityRMSNorm(cfg.head_dim, m, cfg.norm_eps)
        self.k_norm = MultiModalityRMSNorm(cfg.head_dim, m, cfg.norm_eps)

    def _qkv(self, j: int, x: torch.Tensor, ctx: ForwardContext, mod: torch.Tensor | None) -> torch.Tensor:
        c = self.cfg
        qkv = self.linear_qkv(modulate(self.pre_norm(x, j), mod, ctx, j), j, ctx.policy.matmul_dtype).float()
        nq, nk = c.num_heads_q * c.head_dim, c.num_heads_kv * c.head_dim
        q, k, rest = qkv.split([nq, nk, qkv.shape[1] - nq - nk], dim=1)
        q = self.q_norm(q.unflatten(1, (c.num_heads_q, c.head_dim)), j)
        k = self.k_norm(k.unflatten(1, (c.num_heads_kv, c.head_dim)), j)
        return torch.cat([q.flatten(1), k.flatten(1), rest], 1)

    def forward(self, x: torch.Tensor, ctx: ForwardContext, post_norm: MultiModalityRMSNorm | None,
                mod: torch.Tensor | None = None):
        c, dtype = self.cfg, ctx.policy.matmul_dtype
        qkv = ctx.groups.apply(x, lambda j, rows: self._qkv(j, rows, ctx, mod))
        nq, nk = c.num_heads_q * c.head_dim, c.num_heads_kv * c.head_dim
        q, k, v, gate = qkv.split([nq, nk, nk, qkv.shape[1] - nq - 2 * nk], dim=1)
        q = apply_rope(q.unflatten(1, (c.num_heads_q, c.head_dim)), ctx.rope)
        k = apply_rope(k.unflatten(1, (c.num_heads_kv, c.head_dim)), ctx.rope)
        v = v.unflatten(1, (c.num_heads_kv, c.head_dim))
        # On CPU the fp32 kernel of bf16-rounded q/k/v reproduces FlashAttention's accumulation.
        compute = torch.float32 if q.device.type == "cpu" else ctx.policy.attention_dtype
        masks = ctx.audio_local[self.is_local] if self.is_audio_local else None
        o = packed_attention(q, k, v, ctx.seqlens, local=ctx.local if self.is_local and masks is None else None,
                             masks=masks,
                             compute_dtype=compute, out_dtype=ctx.policy.attention_dtype,
                             backend=ctx.attention_backend,
                             lse_merge=q.device.type == "cpu" and ctx.policy.name == "mixed")
        if c.enable_attn_gating:
            o = o.float() * torch.sigmoid(gate).unsqueeze(-1)
        o = o.flatten(1).to(dtype)

        def project(j, rows):
            y = self.linear_proj(rows, j, dtype)
            return post_norm(y, j) if post_norm is not None else y
        return ctx.groups.apply(o, project)


class MLP(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        m, act = cfg.num_experts(layer), cfg.activation(layer)
        inner = cfg.gelu7_intermediate if act == "gelu7" else cfg.swiglu7_intermediate
        up = inner if act == "gelu7" else 2 * inner
        self.activation = act
        self.pre_norm = MultiModalityRMSNorm(cfg.hidden_size, m, cfg.norm_eps)
        self.up_gate_proj = ExpertLinear(cfg.hidden_size, up, m)
        self.down_proj = ExpertLinear(inner, cfg.hidden_size, m)

    def forward(self, x: torch.Tensor, ctx: ForwardContext, post_norm: MultiModalityRMSNorm | None,
                mod: torch.Tensor | None = None):
        dtype, act = ctx.policy.matmul_dtype, ACTIVATION_FNS[self.activation]

        def mlp(j, rows):
            u = self.up_gate_proj(modulate(self.pre_norm(rows, j), mod, ctx, j), j, dtype).float()
            y = self.down_proj(act(u), j, dtype).float()
            return post_norm(y, j) if post_norm is not None else y
        return ctx.groups.apply(x, mlp)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: DiTConfig, layer: int):
        super().__init__()
        self.layer_number = layer
        self.attention = Attention(cfg, layer)
        self.mlp = MLP(cfg, layer)
        if layer in cfg.post_norm_layers:
            m = cfg.num_experts(layer)
            self.attn_post_norm = MultiModalityRMSNorm(cfg.hidden_size, m, cfg.norm_eps)
            self.mlp_post_norm = MultiModalityRMSNorm(cfg.hidden_size, m, cfg.norm_eps)
        else:
            self.attn_post_norm = self.mlp_post_norm = None
        # [shift | scale] of the attention's and the MLP's normalised input, from the caption embedding
        self.caption_modulation = (nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size)
                                   if cfg.caption_modulation else None)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        attn_mod = mlp_mod = None
        if self.caption_modulation is not None:
            # per sample ([B, 2D] each: shift | 1 + scale); modulate() gathers the rows of each token's sample
            m = self.caption_modulation(ctx.caption).unflatten(1, (4, -1))
            m = torch.cat([m[:, 0::2], m[:, 1::2] + 1], 1)  # shift_attn, shift_mlp, gain_attn, gain_mlp
            attn_mod, mlp_mod = m[:, 0::2].flatten(1), m[:, 1::2].flatten(1)
        x = x + self.attention(x, ctx, self.attn_post_norm, attn_mod)
        return x + self.mlp(x, ctx, self.mlp_post_norm, mlp_mod)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg, i) for i in range(cfg.num_layers))


class Adapter(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.video_embedder = nn.Linear(cfg.video_in_channels, cfg.hidden_size)
        self.audio_embedder = nn.Linear(cfg.audio_in_channels, cfg.hidden_size)
        self.text_embedder = nn.Linear(cfg.text_in_channels, cfg.hidden_size)
        self.rope = ElementWiseFourierEmbed(cfg.head_dim, cfg.rope_temperature, cfg.rope_max_frequency,
                                           cfg.rope_frequencies, cfg.num_heads_kv)
        self.embedders = (self.video_embedder, self.audio_embedder, self.text_embedder)
        self.video_position = (nn.Linear(6 * (cfg.head_dim // 8), cfg.hidden_size, bias=False)
                               if cfg.video_position_embedding else None)
        self.caption_embedder = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.caption_modulation else None

    def caption(self, h: torch.Tensor, modality: torch.Tensor, seqlens: list[int]) -> tuple[torch.Tensor,
                                                                                          torch.Tensor]:
        """``(SiLU(linear(mean embedded text token)) [B, D], sample of each token [N])``; a sample without
        text tokens gets the embedding of a zero mean."""
        sample = torch.repeat_interleave(torch.arange(len(seqlens), device=h.device),
                                         torch.tensor(seqlens, device=h.device))
        text = (modality == TEXT).to(h.dtype)
        sums = h.new_zeros(len(seqlens), h.shape[1]).index_add_(0, sample, h * text[:, None])
        counts = h.new_zeros(len(seqlens)).index_add_(0, sample, text).clamp_(min=1)
        return nn.functional.silu(self.caption_embedder(sums / counts[:, None])), sample

    def forward(self, x: torch.Tensor, groups: ModalityGroups, coords: torch.Tensor) -> torch.Tensor:
        x = x.float()
        h = groups.apply(x, lambda j, rows: self.embedders[j](rows[:, :self.embedders[j].in_features]))
        if self.video_position is None:
            return h
        video = torch.nonzero(groups.modality == VIDEO).flatten()
        return h.index_add(0, video, self.video_position(self.rope.fixed_features(coords.index_select(0, video))))


class DiTModel(nn.Module):
    """``forward(x [N, C], coords [N, 9], modality [N])`` -> velocity ``[N, out_channels]``.

    Inputs: video rows in the channel-major patch order (``patchify_video(order="in")``).
    Output: video rows carry ``video_out_channels`` values in the channel-minor order
    (``order="out"``), audio rows ``audio_in_channels`` values then zeros, text rows zeros.
    Weights are initialised with ``horse.model.init.init_weights`` (seeded by ``seed``)
    unless the model lives on the meta device (for loading a checkpoint).
    """

    def __init__(self, config: DiTConfig | str | dict = "demo", precision: str | PrecisionPolicy = "fp32",
                 attention_backend: str = "sdpa", seed: int = 0):
        super().__init__()
        self.config = cfg = get_config(config)
        self.precision = get_policy(precision)
        self.attention_backend = attention_backend
        self.adapter = Adapter(cfg)
        self.block = TransformerBlock(cfg)
        self.final_norm_video = MultiModalityRMSNorm(cfg.hidden_size, 1, cfg.norm_eps)
        self.final_norm_audio = MultiModalityRMSNorm(cfg.hidden_size, 1, cfg.norm_eps)
        self.final_linear_video = nn.Linear(cfg.hidden_size, cfg.video_out_channels, bias=False)
        self.final_linear_audio = nn.Linear(cfg.hidden_size, cfg.audio_in_channels, bias=False)
        if self.final_linear_audio.weight.device.type != "meta":
            from .init import init_weights
            init_weights(self, torch.Generator().manual_seed(seed))

    def set_precision(self, precision: str | PrecisionPolicy) -> None:
        self.precision = get_policy(precision)

    # ---- inputs -> context -------------------------------------------
    def _seqlens(self, n: int, cu_seqlens) -> list[int]:
        if cu_seqlens is None:
            return [n]
        cu = torch.as_tensor(cu_seqlens).tolist()
        if cu[0] != 0 or cu[-1] != n or any(b <= a for a, b in zip(cu[:-1], cu[1:])):
            raise ValueError(f"cu_seqlens must rise strictly from 0 to the token count {n}, got {cu}")
        return [b - a for a, b in zip(cu[:-1], cu[1:])]

    def _local_plan(self, coords, modality, seqlens, local_ranges, local_window):
        if not self.config.local_attn_layers:
            return None
        if local_ranges is not None:
            q, k = local_ranges
            return LocalAttentionPlan.from_ranges(q, k, modality.numel(), modality.device)
        if local_window is None:
            local_window = self.config.local_frame_window
        q_all, k_all = [], []
        for q, k, _, _ in self._window_ranges(coords, modality, seqlens, local_window, audio=False):
            q_all += q
            k_all += k
        return LocalAttentionPlan.from_ranges(q_all, k_all, modality.numel(), modality.device)

    def _audio_masks(self, coords, modality, seqlens, local_window) -> dict[bool, list[torch.Tensor]]:
        """Per-sample masks of the audio-window layers: {also local: masks}, for the kinds the config has. Dense
        masks, one batched SDPA call: an audio token per frame would otherwise make a query segment each."""
        cfg = self.config
        if local_window is None:
            local_window = cfg.local_frame_window
        kinds = {layer in cfg.local_attn_layers for layer in cfg.audio_attn_layers}
        return {local: [ranges_mask(q, k, length, offset, modality.device) for q, k, length, offset in
                        self._window_ranges(coords, modality, seqlens, local_window if local else None, audio=True)]
                for local in kinds}

    def _window_ranges(self, coords, modality, seqlens, video_window, audio: bool):
        """Per sample [video | audio | text]: (q-ranges, k-ranges, length, offset) with video frame windows (None:
        none) and, with ``audio``, audio windows."""
        pt = self.config.video_patch[0]
        offset = 0
        for length in seqlens:
            mod = modality[offset:offset + length]
            nv = int((mod == VIDEO).sum())
            if not nv:
                q, k = [(offset, offset + length)], [(offset, offset + length)]
            else:
                frames = int(coords[offset, 3])
                audio_frames = None
                if audio:
                    rows = coords[offset:offset + length][mod == AUDIO]
                    audio_frames = audio_token_frames(rows, pt)
                q, k = window_ranges(nv, frames, length, offset, video_window=video_window,
                                     audio_frames=audio_frames, audio_window=self.config.audio_frame_window)
            yield q, k, length, offset
            offset += length

    # ---- forward -------------------------------------------------------
    def forward(self, x: torch.Tensor, coords: torch.Tensor, modality: torch.Tensor, *, cu_seqlens=None,
                local_ranges=None, local_window: int | None = None, return_intermediates: bool = False,
                routing: TokenRouting | None = None):
        cfg = self.config
        if x.dim() != 2 or x.shape[0] != coords.shape[0] or x.shape[0] != modality.shape[0]:
            raise ValueError(f"x [N, C], coords [N, 9] and modality [N] must agree on N; got {tuple(x.shape)}, "
                             f"{tuple(coords.shape)}, {tuple(modality.shape)}")
        widest = max(cfg.video_in_channels, cfg.audio_in_channels, cfg.text_in_channels)
        if x.shape[1] < widest:
            # Narrower inputs only work if the missing columns belong to no present modality.
            present = set(torch.unique(modality).tolist())
            need = max(e.in_features for j, e in enumerate(self.adapter.embedders) if j in present)
            if x.shape[1] < need:
                raise ValueError(f"x has {x.shape[1]} columns but its tokens need {need}")
        groups = ModalityGroups(modality)
        seqlens = self._seqlens(x.shape[0], cu_seqlens)
        rope = self.adapter.rope(coords)
        ctx = ForwardContext(groups, rope, seqlens, self._local_plan(coords, modality, seqlens, local_ranges,
                                                                      local_window),
                             self.precision, self.attention_backend,
                             self._audio_masks(coords, modality, seqlens, local_window) if cfg.audio_attn_layers
                             else {})
        h = self.adapter(x, groups, coords)
        if cfg.caption_modulation:
            ctx.set_caption(*self.adapter.caption(h, modality, seqlens))
        result = DiTOutput(out=h, adapter=h if return_intermediates else None,
                           rope=rope if return_intermediates else None)
        full, full_ctx = None, ctx
        for i, layer in enumerate(self.block.layers):
            if routing is not None and i == routing.start:
                full, ctx = h, self._routed_context(ctx, modality, routing.keep)
                kept = torch.nonzero(routing.keep).flatten()
                h = h.index_select(0, kept)
            if routing is not None and i == routing.end:
                h, ctx = full.index_copy(0, kept, h), full_ctx
            h = layer(h, ctx)
            if return_intermediates:
                result.hidden_states.append(h)
        result.out = groups.apply(h, self._head)
        return result if return_intermediates else result.out

    def _routed_context(self, ctx: ForwardContext, modality: torch.Tensor, keep: torch.Tensor) -> ForwardContext:
        if keep.shape != modality.shape or keep.dtype != torch.bool:
            raise ValueError("routing.keep must be a bool mask over the packed tokens")
        if ctx.local is not None or ctx.audio_local:
            raise ValueError("TREAD routing cannot be combined with local-attention or audio-window layers")
        bounds = torch.tensor([0, *torch.tensor(ctx.seqlens).cumsum(0).tolist()])
        kept_per_sample = [int(keep[a:b].sum()) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
        if min(kept_per_sample) == 0:
            raise ValueError("TREAD routing must keep at least one token of every sample")
        routed = ForwardContext(ModalityGroups(modality[keep]), ctx.rope[keep], kept_per_sample, None, ctx.policy,
                                ctx.attention_backend)
        return routed if ctx.caption is None else routed.set_caption(ctx.caption, ctx.sample_index[keep])

    def _head(self, j: int, rows: torch.Tensor) -> torch.Tensor:
        width = self.config.out_channels
        if j == VIDEO:
            y = self.final_linear_video(self.final_norm_video(rows.float()))
        elif j == AUDIO:
            y = self.final_linear_audio(self.final_norm_audio(rows.float()))
        else:
            assert j == TEXT
            return rows.new_zeros(rows.shape[0], width, dtype=torch.float32)
        return y if y.shape[1] == width else torch.nn.functional.pad(y, (0, width - y.shape[1]))
