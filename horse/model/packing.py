"""Per-sample latents <-> the flat token sequence the DiT reads (spec 4.2, 4.5, 4.6).

A sample is a video latent ``[C, T, h, w]``, audio latents ``[Na, Ca]`` and text
features ``[Nt, Ct]``. Packed, it becomes rows ``[video | audio | text]``, each
zero-padded to the widest modality, with 9-column coords and modality ids;
several samples are concatenated and described by ``cu_seqlens``.

Patch order asymmetry (fixed by the released weights): the model *reads* video
tokens channel-major ``(C pT pH pW)`` and *writes* them channel-minor
``(pT pH pW C)``. Use ``patchify_video(..., order="in")`` for inputs and
``order="out"`` for targets compared against the model's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .config import AUDIO, TEXT, VIDEO

PATCH = (1, 2, 2)
COORD_STYLES = ("v1", "v2")
# The release's v1 text span: text t runs over [0, 1] (offset 0, ref 2).
V1_TEXT_REF = 2


def patchify_video(latent: torch.Tensor, order: str = "in", patch=PATCH) -> torch.Tensor:
    """``[C, T, h, w]`` -> ``[T*(h/ph)*(w/pw), C*pt*ph*pw]`` tokens, t-major then h then w."""
    if latent.dim() != 4:
        raise ValueError(f"video latent must be [C, T, h, w], got shape {tuple(latent.shape)}")
    pt, ph, pw = patch
    _, t, h, w = latent.shape
    if t % pt or h % ph or w % pw:
        raise ValueError(f"video latent T,h,w = {t},{h},{w} must be multiples of the patch {patch}")
    pattern = "(C pt ph pw)" if order == "in" else "(pt ph pw C)"
    if order not in ("in", "out"):
        raise ValueError(f"order must be 'in' (model input) or 'out' (model output), got {order!r}")
    return rearrange(latent, f"C (T pt) (H ph) (W pw) -> (T H W) {pattern}", pt=pt, ph=ph, pw=pw)


def unpatchify_video(tokens: torch.Tensor, grid: tuple[int, int, int], order: str = "out",
                     patch=PATCH) -> torch.Tensor:
    """Inverse of ``patchify_video``: tokens ``[Nv, C*p]`` on token ``grid (T, H, W)`` -> ``[C, T*pt, H*ph, W*pw]``."""
    pt, ph, pw = patch
    t, h, w = grid
    if tokens.shape[0] != t * h * w:
        raise ValueError(f"{tokens.shape[0]} video tokens do not fill the token grid {grid}")
    pattern = "(C pt ph pw)" if order == "in" else "(pt ph pw C)"
    return rearrange(tokens, f"(T H W) {pattern} -> C (T pt) (H ph) (W pw)", T=t, H=h, W=w, pt=pt, ph=ph, pw=pw)


def check_video_width(latent_channels: int, patch, video_in_channels: int, context: int = 0) -> None:
    """A video token's input (latent channels x patch volume x (2*context + 1) patches) must be what the
    model's video input reads."""
    width = latent_channels * math.prod(patch) * (2 * context + 1)
    if width != video_in_channels:
        raise ValueError(
            f"{latent_channels}-channel video latents in {tuple(patch)} patches with {context} context token(s) "
            f"each side make {width}-wide tokens, but the model's video input reads {video_in_channels}: set the "
            f"model's video_in_channels to {width} (or video_patch / video_context_frames to match the codec)")


def video_input_tokens(latent: torch.Tensor, patch=PATCH, context: int = 0) -> torch.Tensor:
    """Input rows ``[N, (2k+1) * C * p]``: each token's own patch with the patches ``1..k`` tokens earlier and
    later at the same place (offsets -k..k in that order; zeros beyond the clip's ends)."""
    own = patchify_video(latent, "in", patch)
    if context == 0:
        return own
    pt = patch[0]
    padded = torch.nn.functional.pad(latent, (0, 0, 0, 0, context * pt, context * pt))
    frames = latent.shape[1]
    parts = [own if d == 0 else patchify_video(padded[:, (context + d) * pt:(context + d) * pt + frames], "in", patch)
             for d in range(-context, context + 1)]
    return torch.cat(parts, dim=1)


def _coords(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, size, ref) -> torch.Tensor:
    n = t.numel()
    const = torch.tensor([*size, *ref], dtype=torch.float32).expand(n, 6)
    return torch.cat([torch.stack([t, h, w], 1).float(), const], 1)


def video_coords(grid: tuple[int, int, int], frames_per_token: int = 1) -> torch.Tensor:
    """Token grid ``(T, H, W)`` -> coords. A token of ``pt`` latent frames sits at its frames' mean time,
    ``pt * t + (pt - 1) / 2``, so time stays in latent frames (where the v2 audio coords put audio)."""
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    pt = frames_per_token
    times = tt.flatten() * pt + (pt - 1) / 2  # ref == size keeps RoPE's time scale at 1
    return _coords(times, hh.flatten(), ww.flatten(), grid, grid)


def audio_coords(num_audio: int, video_frames: int, style: str = "v2") -> torch.Tensor:
    """v2: audio token k sits at latent-video time k * ((Na-1)//4)/(Na-1), i.e. ~k/4.
    v1: the audio span is stretched over the video's latent frames."""
    t = torch.arange(num_audio)
    zeros = torch.zeros(num_audio)
    if style == "v2":
        ref = (num_audio - 1) // 4 + 1
    else:
        if num_audio > 1 and video_frames < 1:
            raise ValueError("v1 audio coords stretch audio over the video's latent frames: a sample without "
                             "video needs coords_style='v2'")
        ref = video_frames if num_audio > 1 else 1
    return _coords(t, zeros, zeros, (num_audio, 1, 1), (ref, 1, 1))


def audio_token_frames(coords: torch.Tensor, frames_per_token: int = 1) -> list[int]:
    """Audio coords rows -> the video token frame at each audio token's time: RoPE's time ``t * (ref-1)/(size-1)``
    in latent frames (v2: ~k/4), floored to whole video tokens of ``frames_per_token`` latent frames."""
    t, size, ref = coords[:, 0].double(), coords[:, 3].double(), coords[:, 6].double()
    scale = torch.where(size > 1, (ref - 1) / (size - 1).clamp_min(1), torch.ones_like(size))
    return torch.floor(t * scale / frames_per_token + 1e-6).long().tolist()


def text_coords(num_text: int, style: str = "v2") -> torch.Tensor:
    """v2: t = -Nt..-1 with ref 1, so every text angle is 0 (text is not rotated) once Nt > 1.
    v1: t = 0..Nt-1 spread over [0, 1]; one text token gets ref 1 (the release divides by zero there)."""
    zeros = torch.zeros(num_text)
    if style == "v2":
        return _coords(torch.arange(num_text) - num_text, zeros, zeros, (num_text, 1, 1), (1, 1, 1))
    ref = V1_TEXT_REF if num_text > 1 else 1
    return _coords(torch.arange(num_text), zeros, zeros, (num_text, 1, 1), (ref, 1, 1))


@dataclass
class SampleLayout:
    """Where one sample's tokens sit in the pack and the shapes to rebuild it."""

    offset: int
    video_grid: tuple[int, int, int]
    video_channels: int
    num_audio: int
    num_text: int

    @property
    def num_video(self) -> int:
        t, h, w = self.video_grid
        return t * h * w

    @property
    def length(self) -> int:
        return self.num_video + self.num_audio + self.num_text


@dataclass
class PackedBatch:
    x: torch.Tensor          # [N, C_max] fp32
    coords: torch.Tensor     # [N, 9] fp32
    modality: torch.Tensor   # [N] int64
    cu_seqlens: torch.Tensor  # [B+1] int64
    layouts: list[SampleLayout]
    patch: tuple[int, int, int] = PATCH  # latent (frames, rows, cols) per video token

    @property
    def num_tokens(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.x.to(device), self.coords.to(device), self.modality.to(device),
                           self.cu_seqlens, self.layouts, self.patch)

    def model_inputs(self) -> dict:
        return dict(x=self.x, coords=self.coords, modality=self.modality, cu_seqlens=self.cu_seqlens)


def pack(samples: list[dict], width: int, coords_style: str = "v2", patch=PATCH, context: int = 0) -> PackedBatch:
    """Pack samples ``{"video": [C,T,h,w], "audio": [Na,Ca], "text": [Nt,Ct]}`` (any may be absent).

    ``patch``: latent (frames, rows, cols) per video token, the model's ``config.video_patch``;
    ``context``: its ``video_context_frames`` (``video_input_tokens``)."""
    if coords_style not in COORD_STYLES:
        raise ValueError(f"coords_style must be one of {COORD_STYLES}, got {coords_style!r}")
    if not samples:
        raise ValueError("pack() needs at least one sample")
    xs, cs, ms, layouts, offset = [], [], [], [], 0
    for i, s in enumerate(samples):
        unknown = set(s) - {"video", "audio", "text"}
        if unknown:
            raise ValueError(f"sample {i} has unknown entries {sorted(unknown)}; use video, audio, text")
        parts = []
        video = s.get("video")
        grid, vc = (0, 0, 0), 0
        if video is not None:
            tokens = video_input_tokens(video, patch, context)
            grid = (video.shape[1] // patch[0], video.shape[2] // patch[1], video.shape[3] // patch[2])
            vc = video.shape[0]
            parts.append((tokens, video_coords(grid, patch[0]), VIDEO))
        for name, mod in (("audio", AUDIO), ("text", TEXT)):
            feats = s.get(name)
            if feats is None:
                continue
            if feats.dim() != 2:
                raise ValueError(f"sample {i}: {name} must be [tokens, channels], got {tuple(feats.shape)}")
            coords = (audio_coords(feats.shape[0], grid[0], coords_style) if mod == AUDIO
                      else text_coords(feats.shape[0], coords_style))
            parts.append((feats, coords, mod))
        for tokens, coords, mod in parts:
            if tokens.shape[1] > width:
                raise ValueError(f"sample {i}: {tokens.shape[1]} channels do not fit the pack width {width}")
            xs.append(torch.nn.functional.pad(tokens.float(), (0, width - tokens.shape[1])))
            cs.append(coords)
            ms.append(torch.full((tokens.shape[0],), mod, dtype=torch.int64))
        layout = SampleLayout(offset, grid, vc, _rows(s.get("audio")), _rows(s.get("text")))
        if layout.length == 0:
            raise ValueError(f"sample {i} has no tokens")
        layouts.append(layout)
        offset += layout.length
    cu = torch.tensor([0] + [l.offset + l.length for l in layouts], dtype=torch.int64)
    return PackedBatch(torch.cat(xs), torch.cat(cs), torch.cat(ms), cu, layouts, tuple(patch))


def pack_for_model(samples: list[dict], config, coords_style: str = "v2") -> PackedBatch:
    """``pack`` with a ``DiTConfig``'s width, video patch and context, after checking the video token width."""
    videos = [s["video"] for s in samples if s.get("video") is not None]
    if videos:
        check_video_width(videos[0].shape[0], config.video_patch, config.video_in_channels,
                          config.video_context_frames)
    return pack(samples, config.max_in_channels, coords_style, config.video_patch, config.video_context_frames)


def _rows(t) -> int:
    return 0 if t is None else t.shape[0]


def unpack(out: torch.Tensor, packed: PackedBatch, audio_channels: int) -> list[dict]:
    """Model output ``[N, C_out]`` -> per sample ``{"video": [C,T,h,w], "audio": [Na, Ca]}``."""
    result = []
    for lay in packed.layouts:
        sample = {}
        o = lay.offset
        if lay.num_video:
            tokens = out[o:o + lay.num_video, :lay.video_channels * math.prod(packed.patch)]
            sample["video"] = unpatchify_video(tokens, lay.video_grid, "out", packed.patch)
        if lay.num_audio:
            sample["audio"] = out[o + lay.num_video:o + lay.num_video + lay.num_audio, :audio_channels]
        result.append(sample)
    return result
