"""T5Gemma text encoder: a tiny encoder-decoder saved like the published one, loaded through the codec."""

import pytest
import torch

pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    PreTrainedTokenizerFast,
    T5GemmaConfig,
    T5GemmaForConditionalGeneration,
    T5GemmaModuleConfig,
)

from horse.codecs.t5gemma_text import TEXT_MAX_TOKENS, T5GemmaTextEncoder  # noqa: E402

WORDS = "the a cat dog sings runs loud soft slowly".split()
HIDDEN = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random tiny T5Gemma (encoder-decoder, as published) and a word-level tokenizer that adds <bos>."""
    torch.manual_seed(0)
    sizes = dict(vocab_size=16, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, sliding_window=4)  # fmt: skip
    config = T5GemmaConfig(encoder=T5GemmaModuleConfig(**sizes), decoder=T5GemmaModuleConfig(**sizes), vocab_size=16)
    model = T5GemmaForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("t5gemma")
    model.save_pretrained(path)
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(path)
    return path, model


def reference(model, ids):
    with torch.no_grad():
        return model.get_encoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]


def test_features_are_the_encoder_output_rounded_to_fp16(folder):
    path, model = folder
    encoder = T5GemmaTextEncoder.from_pretrained(path, dtype=torch.float32)
    assert encoder.max_length == TEXT_MAX_TOKENS and encoder.feature_dim == HIDDEN
    features = encoder.encode("the cat sings")
    assert features.shape == (4, HIDDEN) and features.dtype == torch.float32  # <bos> + 3 words
    expected = reference(model, [2, 4, 6, 8])
    torch.testing.assert_close(features, expected.half().float(), rtol=0, atol=0)
    assert not torch.equal(features, expected)  # the fp16 rounding really happened


def test_trimming_keeps_the_first_outputs_of_the_whole_prompt(folder):
    path, model = folder
    encoder = T5GemmaTextEncoder.from_pretrained(path, dtype=torch.float32, max_length=3)
    features = encoder.encode("the dog runs slowly")
    full = reference(model, [2, 4, 7, 9, 12]).half().float()
    assert features.shape == (3, HIDDEN)
    torch.testing.assert_close(features, full[:3], rtol=0, atol=0)  # the encoder saw all 5 tokens
    cut = reference(model, [2, 4, 7]).half().float()
    assert not torch.allclose(features, cut)


def test_a_batch_equals_the_prompts_alone_and_pads_with_zeros(folder):
    path, _ = folder
    encoder = T5GemmaTextEncoder.from_pretrained(path, dtype=torch.float32, max_length=8)
    prompts = ["a cat sings loud", "the dog"]
    batch = encoder.encode_batch(prompts)
    assert batch.features.shape == (2, 8, HIDDEN) and batch.lengths.tolist() == [5, 3]
    for i, prompt in enumerate(prompts):
        torch.testing.assert_close(batch.unpadded(i), encoder.encode(prompt), rtol=0, atol=0)
        assert batch.features[i, batch.lengths[i] :].abs().sum() == 0


def test_bf16_weights_as_released(folder):
    path, _ = folder
    encoder = T5GemmaTextEncoder.from_pretrained(path)  # default dtype: bfloat16
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    features = encoder.encode("soft dog")
    assert features.dtype == torch.float32 and features.shape == (3, HIDDEN)


def test_missing_folder_and_bad_arguments_are_clear_errors(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        T5GemmaTextEncoder.from_pretrained(tmp_path / "nowhere")
    path, _ = folder
    encoder = T5GemmaTextEncoder.from_pretrained(path, dtype=torch.float32)
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode_batch("a single string")
    with pytest.raises(ValueError, match="max_length"):
        T5GemmaTextEncoder(encoder.model, encoder.tokenizer, max_length=0)
