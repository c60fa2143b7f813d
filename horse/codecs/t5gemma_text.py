"""Text encoder: the encoder of T5Gemma (google/t5gemma-9b-9b-ul2) through transformers' `T5GemmaEncoderModel`.

As daVinci-MagiHuman does: the tokenizer runs with its defaults (no padding, no truncation, its own
special tokens), each prompt goes through the encoder alone (so padding never reaches the model),
`last_hidden_state` is rounded to fp16 and returned as fp32, and only the first `max_length`
positions are kept (the encoder still saw the whole prompt). The true length is returned with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_MAX_TOKENS = 640  # text tokens the DiT sees at most (pad_or_trim length of the official pipeline)


@dataclass
class TextEncoding:
    features: torch.Tensor  # [B, max_length, D] float32, zeros after each prompt's length
    lengths: torch.Tensor  # [B] int64, min(tokens, max_length)

    def unpadded(self, index: int) -> torch.Tensor:
        """The [length, D] features of prompt `index`, the tokens the DiT sees."""
        return self.features[index, : int(self.lengths[index])]


class T5GemmaTextEncoder:
    def __init__(self, model: torch.nn.Module, tokenizer, max_length: int = TEXT_MAX_TOKENS):
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.feature_dim = model.config.encoder.hidden_size

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        max_length: int = TEXT_MAX_TOKENS,
        tokenizer_folder: str | Path | None = None,
    ) -> "T5GemmaTextEncoder":
        """Load the encoder (and tokenizer) from a local copy of the published folder; never downloads.

        The published checkpoint is the full encoder-decoder: its decoder weights are skipped.
        """
        from transformers import AutoTokenizer, T5GemmaEncoderModel
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder is not None else folder
        for path in (folder / "config.json", tokenizer_folder):
            if not path.exists():
                raise FileNotFoundError(f"T5Gemma file or folder not found: {path} (expected a local model folder)")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the skipped decoder weights would otherwise be listed one by one
        try:
            model, info = T5GemmaEncoderModel.from_pretrained(
                folder, is_encoder_decoder=False, dtype=dtype, local_files_only=True, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        if info["missing_keys"] or info["mismatched_keys"]:
            raise ValueError(
                f"{folder} does not hold a complete T5Gemma encoder: missing {sorted(info['missing_keys'])[:20]}, "
                f"mismatched {list(info['mismatched_keys'])[:20]}"
            )
        return cls(model.to(device), tokenizer, max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        """One prompt -> [min(L, max_length), D] float32 features; the true length is the first dimension."""
        tokens = self.tokenizer([prompt], return_tensors="pt")
        input_ids = tokens["input_ids"].to(self.device)
        if input_ids.shape[1] == 0:
            raise ValueError(f"the tokenizer produced no tokens for prompt {prompt!r}")
        attention_mask = tokens.get("attention_mask", torch.ones_like(input_ids)).to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[0]
        return hidden.half().float()[: self.max_length]  # fp16 rounding as in the official encoder

    def encode_batch(self, prompts: Sequence[str]) -> TextEncoding:
        """Prompts (each encoded alone) -> zero-padded [B, max_length, D] float32 features and true lengths."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("encode_batch needs a non-empty list of prompts (use encode for one prompt)")
        features = torch.zeros(len(prompts), self.max_length, self.feature_dim, device=self.device)
        lengths = torch.zeros(len(prompts), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            one = self.encode(prompt)
            features[i, : one.shape[0]] = one
            lengths[i] = one.shape[0]
        return TextEncoding(features, lengths)
