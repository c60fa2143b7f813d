"""CLIP score of generated video against its prompt: ``100 * max(cos(image_embedding, text_embedding), 0)``
(Hessel et al. 2021, as torchmetrics computes it), averaged over sampled frames of each clip.

Model: ``transformers.CLIPModel`` + ``CLIPTokenizer`` from a local Hugging Face folder (default key list
``clip-vit-large-patch14``, the torchmetrics default). Text longer than CLIP's 77 tokens is truncated, so for
enhanced prompts only the start of the English main body counts (``main_body`` in the prompts suite strips the
Dialogue / Background Sound blocks before scoring).

Image preprocessing (``clip_preprocess``), as ``CLIPImageProcessor`` does it: resize the shortest side to 224
with PIL bicubic (the longer side ``int(224 * long / short)``), centre crop 224x224 (offsets rounded as
``int(round((size - 224) / 2))``), scale to [0, 1], normalise with CLIP's mean/std.
"""

from __future__ import annotations

import numpy as np
import torch

CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MAX_TOKENS = 77
CLIP_SCORE_SCALE = 100.0
CLIP_FRAMES_PER_CLIP = 8   # frames sampled evenly from each clip
CLIP_KEY_LIST = "clip-vit-large-patch14"


def clip_preprocess(frames, size: int = CLIP_SIZE) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` (or one ``[H, W, 3]``) -> float ``[N, 3, size, size]``."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
    mean, std = np.array(CLIP_MEAN, np.float32), np.array(CLIP_STD, np.float32)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        short, long = min(h, w), max(h, w)
        new_long = int(size * long / short)
        new_h, new_w = (size, new_long) if h <= w else (new_long, size)
        img = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, np.float32)
        top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
        arr = arr[top:top + size, left:left + size] / 255.0
        out.append((arr - mean) / std)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def sample_frame_indices(num_frames: int, count: int = CLIP_FRAMES_PER_CLIP) -> np.ndarray:
    """``count`` evenly spaced frame indices (all frames when the clip is shorter)."""
    if num_frames < 1:
        raise ValueError("the clip has no frames")
    return np.unique(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int))


@torch.no_grad()
def clip_scores(model, tokenizer, clips, prompts, *, frames_per_clip: int = CLIP_FRAMES_PER_CLIP) -> list[float]:
    """One CLIP score per (clip uint8 ``[T, H, W, 3]``, prompt) pair: mean over sampled frames."""
    if len(clips) != len(prompts):
        raise ValueError(f"got {len(clips)} clips but {len(prompts)} prompts")
    device = next(model.parameters()).device
    tokens = tokenizer(list(prompts), padding=True, truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt")
    text = model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
    text = _as_tensor(text)
    text = text / text.norm(dim=-1, keepdim=True)
    scores = []
    for i, clip in enumerate(clips):
        clip = np.asarray(clip)
        pixels = clip_preprocess(clip[sample_frame_indices(len(clip), frames_per_clip)]).to(device)
        image = _as_tensor(model.get_image_features(pixel_values=pixels))
        image = image / image.norm(dim=-1, keepdim=True)
        cosine = image @ text[i]
        scores.append(float((CLIP_SCORE_SCALE * cosine.clamp(min=0)).mean()))
    return scores


def _as_tensor(features) -> torch.Tensor:
    # transformers may return a model-output object (pooler_output holds the projected features) or a tensor.
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def load_clip(path, key_list=CLIP_KEY_LIST, device="cpu"):
    """(CLIPModel, CLIPTokenizer) from a local Hugging Face folder, checked against the key list; never downloads."""
    from transformers import CLIPModel, CLIPTokenizer

    from horse.metrics.loaders import load_hf_folder

    model = load_hf_folder(path, key_list, "CLIP", CLIPModel).to(device)
    return model, CLIPTokenizer.from_pretrained(str(path), local_files_only=True)


__all__ = ["CLIP_MEAN", "CLIP_STD", "clip_preprocess", "clip_scores", "load_clip", "sample_frame_indices"]
