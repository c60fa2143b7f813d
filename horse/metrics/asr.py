"""Speech -> text with Whisper (``transformers.WhisperForConditionalGeneration``), for WER/CER of generated
dialogue against the prompt's lines (``horse.metrics.text_metrics``).

Default key list: ``whisper-large-v3`` (multilingual, covers all release languages incl. Cantonese ``yue``).
The release reports WER with GLM-ASR (spec section 8); Whisper is the open, widely used stand-in, so numbers are
comparable between horse checkpoints, not to the release's table.
Audio is mixed to mono and resampled to 16 kHz (``scipy.signal.resample_poly``) before the feature extractor.
"""

from __future__ import annotations

import torch

WHISPER_SAMPLE_RATE = 16000
WHISPER_KEY_LIST = "whisper-large-v3"
WHISPER_MAX_NEW_TOKENS = 200
# Prompt-set language codes -> Whisper language codes (Mandarin and Cantonese are separate in large-v3).
WHISPER_LANGUAGES = {"en": "en", "zh": "zh", "yue": "yue", "ja": "ja", "ko": "ko", "de": "de", "fr": "fr"}


def load_whisper(path, key_list=WHISPER_KEY_LIST, device="cpu"):
    """(WhisperForConditionalGeneration, WhisperProcessor) from a local Hugging Face folder; never downloads."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from horse.metrics.loaders import load_hf_folder

    model = load_hf_folder(path, key_list, "Whisper", WhisperForConditionalGeneration).to(device)
    return model, WhisperProcessor.from_pretrained(str(path), local_files_only=True)


def whisper_features(feature_extractor, waveforms, sample_rate: int) -> torch.Tensor:
    """Waveforms (``[S]`` or ``[channels, S]``) -> log-mel input features ``[N, mel_bins, frames]``."""
    from horse.metrics.fad import to_mono_16k

    audio = [to_mono_16k(w, sample_rate, WHISPER_SAMPLE_RATE).astype("float32") for w in waveforms]
    return feature_extractor(audio, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt").input_features


@torch.no_grad()
def transcribe(model, processor, waveforms, sample_rate: int, *, language: str | None = None,
               max_new_tokens: int = WHISPER_MAX_NEW_TOKENS) -> list[str]:
    """One transcript per waveform; ``language`` (a key of ``WHISPER_LANGUAGES``) skips language detection."""
    if language is not None and language not in WHISPER_LANGUAGES:
        raise ValueError(f"unknown language {language!r}; choose one of {sorted(WHISPER_LANGUAGES)}")
    device = next(model.parameters()).device
    features = whisper_features(processor.feature_extractor, waveforms, sample_rate).to(device, model.dtype)
    kwargs = {"max_new_tokens": max_new_tokens}
    if language is not None:
        kwargs.update(language=WHISPER_LANGUAGES[language], task="transcribe")
    ids = model.generate(features, **kwargs)
    ids = ids.sequences if hasattr(ids, "sequences") else ids
    return [text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True)]


__all__ = ["WHISPER_LANGUAGES", "load_whisper", "transcribe", "whisper_features"]
