"""Tiny random Hugging Face folders (CLIP, Whisper) with character-level tokenizers, for plumbing tests only."""

import json

import pytest
import torch

ASCII = [chr(c) for c in range(33, 127)] + ["\u0120"]  # printable ASCII + GPT-2's byte-level space
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|notimestamps|>"]
TINY_CLIP = {"projection_dim": 8,
             "text_config.hidden_size": 16, "text_config.intermediate_size": 32, "text_config.num_attention_heads": 2,
             "text_config.num_hidden_layers": 2, "text_config.vocab_size": 2 * len(ASCII) + 2,
             "text_config.max_position_embeddings": 77, "text_config.bos_token_id": 2 * len(ASCII),
             "text_config.eos_token_id": 2 * len(ASCII) + 1, "text_config.pad_token_id": 2 * len(ASCII) + 1,
             "vision_config.hidden_size": 16, "vision_config.intermediate_size": 32,
             "vision_config.num_attention_heads": 2, "vision_config.num_hidden_layers": 2,
             "vision_config.patch_size": 32, "vision_config.image_size": 224, "vision_config.num_channels": 3}
TINY_WHISPER = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "num_mel_bins": 16,
                "vocab_size": len(ASCII) + len(WHISPER_SPECIALS), "max_source_positions": 100,
                "max_target_positions": 32, "pad_token_id": len(ASCII), "bos_token_id": len(ASCII),
                "eos_token_id": len(ASCII), "decoder_start_token_id": len(ASCII) + 1}


def _write_bpe(folder, vocab):
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from horse.metrics.loaders import nest_config

    folder = tmp_path_factory.mktemp("clip")
    vocab = {c: i for i, c in enumerate(ASCII)}
    vocab.update({c + "</w>": i + len(ASCII) for i, c in enumerate(ASCII)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    _write_bpe(folder, vocab)
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**nest_config(TINY_CLIP))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory):
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    folder = tmp_path_factory.mktemp("whisper")
    vocab = {c: i for i, c in enumerate(ASCII)}
    vocab.update({s: len(ASCII) + i for i, s in enumerate(WHISPER_SPECIALS)})
    _write_bpe(folder, vocab)
    eot = WHISPER_SPECIALS[0]
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=eot,
                                 bos_token=eot, eos_token=eot)
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    features = WhisperFeatureExtractor(feature_size=TINY_WHISPER["num_mel_bins"], chunk_length=2)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    assert vocab[eot] == TINY_WHISPER["eos_token_id"] and vocab[WHISPER_SPECIALS[1]] == TINY_WHISPER[
        "decoder_start_token_id"]
    config = WhisperConfig(**TINY_WHISPER)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    # Language/task tables as released Whisper folders carry them (written to the file: transformers rebuilds a
    # generation config marked _from_model_config from the model config on load).
    generation = json.loads((folder / "generation_config.json").read_text())
    generation.pop("_from_model_config", None)
    generation.update(lang_to_id={"<|en|>": vocab["<|en|>"]}, is_multilingual=True,
                      task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
                      no_timestamps_token_id=vocab["<|notimestamps|>"])
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder
