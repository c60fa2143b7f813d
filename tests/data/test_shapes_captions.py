"""shapes-AV captions: parameters round-trip, demo-vocabulary coverage, motion phrase."""

import itertools

import pytest
from tokenizers import Tokenizer

from horse.codecs.demo.build_text_assets import ASSETS_DIR, TOKENIZER_FILE, UNK
from horse.data.shapes import CAPTION_TEMPLATES, ShapesConfig, make_caption, make_clip, motion_phrase, parse_caption

CONFIG = ShapesConfig()
MAX_TEXT_TOKENS = 28  # ~24 words + punctuation + [EOS]: a small share of the 256 + 65 AV tokens


def all_params():
    for colour, shape, size, direction, speed, background in itertools.product(
            CONFIG.colours, CONFIG.shapes, CONFIG.sizes, CONFIG.directions, CONFIG.speeds, CONFIG.backgrounds):
        yield {"colour": colour, "shape": shape, "size": size, "direction": direction, "speed": speed,
               "background": background, "pitch": CONFIG.pitches[shape][0]}


def test_every_caption_parses_back_to_its_parameters():
    for i, params in enumerate(all_params()):
        motion = (i % 11) / 10
        template = i % len(CAPTION_TEMPLATES)
        parsed = parse_caption(make_caption(params, motion, template), CONFIG)
        assert parsed == {**params, "motion_score": motion}


def test_generated_captions_match_ground_truth():
    for index in range(30):
        _, _, truth = make_clip(CONFIG, 9, "train", index)
        parsed = parse_caption(truth["caption"])
        for key in ("colour", "shape", "size", "direction", "speed", "background", "pitch", "motion_score"):
            assert parsed[key] == truth[key], key
        assert truth["caption"].endswith(f"motion score: {truth['motion_score']:.1f}")


def test_captions_use_only_demo_vocabulary_and_few_tokens():
    tokenizer = Tokenizer.from_file(str(ASSETS_DIR / TOKENIZER_FILE))
    longest = 0
    for i, params in enumerate(all_params()):
        encoding = tokenizer.encode(make_caption(params, 0.7, i % len(CAPTION_TEMPLATES)))
        assert UNK not in encoding.tokens, encoding.tokens
        longest = max(longest, len(encoding.ids))
    assert longest <= MAX_TEXT_TOKENS


def test_motion_phrase():
    assert motion_phrase(0.73) == "motion score: 0.7"
    assert motion_phrase(1) == "motion score: 1.0"
    assert motion_phrase(0.0) == "motion score: 0.0"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        motion_phrase(1.2)


def test_parse_caption_rejects_foreign_text():
    with pytest.raises(ValueError, match="subject"):
        parse_caption("a dog runs in the park")
    # No motion phrase is allowed (a user prompt); the score is then None.
    parsed = parse_caption("a large blue square moves left quickly on a black background and beeps medium")
    assert parsed["motion_score"] is None and parsed["direction"] == "left" and parsed["size"] == "large"
