import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from horse.codecs.demo import DEMO_CODEC_SPEC, DemoTextEncoder, TextEncoder
from horse.codecs.demo.build_text_assets import (
    ASSETS_DIR,
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    build_text_assets,
)

CAPTION = "A small red circle moves slowly left and beeps high at each bounce. Motion score: 0.7"


@pytest.fixture(scope="module")
def encoder():
    return DemoTextEncoder.load()


def test_features_shape_dtype_and_scale(encoder):
    features = encoder.encode(CAPTION)
    num_tokens = len(encoder.token_ids(CAPTION))
    assert features.shape == (num_tokens, DEMO_CODEC_SPEC.text_width) and features.dtype == torch.float32
    assert isinstance(encoder, TextEncoder)
    assert features.mean().abs() < 0.05 and 0.9 < features.std() < 1.1  # post-LayerNorm: unit scale per token


def test_tokenizer_lowercases_splits_digits_and_appends_eos(encoder):
    tokens = encoder.tokenizer.encode(CAPTION).tokens
    assert tokens[:4] == ["a", "small", "red", "circle"]
    assert tokens[-6:] == ["score", ":", "0", ".", "7", "[EOS]"]
    assert "[UNK]" not in tokens
    assert encoder.token_ids("RED Circle") == encoder.token_ids("red circle")


def test_unknown_words_map_to_unk(encoder):
    unk = encoder.tokenizer.token_to_id("[UNK]")
    ids = encoder.token_ids("a zebra plays the xylophone")
    assert ids[1] == unk and ids[4] == unk
    assert encoder.encode("zebra xylophone").shape == (3, 128)


def test_empty_prompt_still_gives_one_token(encoder):
    assert encoder.encode("").shape == (1, 128)


def test_deterministic_across_calls_and_loads(encoder):
    assert torch.equal(encoder.encode(CAPTION), encoder.encode(CAPTION))
    assert torch.equal(DemoTextEncoder.load(ASSETS_DIR).encode(CAPTION), encoder.encode(CAPTION))


def test_features_depend_on_words_order_and_context(encoder):
    red, blue = encoder.encode("the red circle"), encoder.encode("the blue circle")
    assert red.shape == blue.shape and (red - blue).abs().max() > 0.1
    swapped = encoder.encode("the circle red")
    assert (red - swapped).abs().max() > 0.1
    # Contextual: changing the last word changes the features of the earlier, unchanged words.
    square = encoder.encode("the red square")
    assert (red[:2] - square[:2]).abs().max() > 0.05


def test_trimming_keeps_first_rows_of_full_encoding():
    short = DemoTextEncoder.load(max_length=4)
    full = DemoTextEncoder.load(max_length=64).encode(CAPTION)
    trimmed = short.encode(CAPTION)
    assert trimmed.shape == (4, 128) and torch.equal(trimmed, full[:4])
    assert short.encode("red").shape == (2, 128)  # shorter prompts keep their true length


def test_committed_assets_match_build_script(tmp_path):
    build_text_assets(tmp_path)
    committed, rebuilt = load_file(str(ASSETS_DIR / WEIGHTS_FILE)), load_file(str(tmp_path / WEIGHTS_FILE))
    assert committed.keys() == rebuilt.keys()
    assert all(torch.equal(committed[name], rebuilt[name]) for name in committed)
    for name in (CONFIG_FILE, TOKENIZER_FILE):
        assert json.loads((ASSETS_DIR / name).read_text()) == json.loads((tmp_path / name).read_text()), name
    assert (ASSETS_DIR / WEIGHTS_FILE).stat().st_size < 4 * 2**20


def test_missing_asset_is_a_clear_error(tmp_path):
    shutil.copytree(ASSETS_DIR, tmp_path / "assets")
    (tmp_path / "assets" / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        DemoTextEncoder.load(tmp_path / "assets")


def test_bad_arguments(encoder):
    with pytest.raises(ValueError, match="str"):
        encoder.encode(["a list"])
    with pytest.raises(ValueError, match="max_length"):
        DemoTextEncoder.load(max_length=0)
