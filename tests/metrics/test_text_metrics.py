import math

import pytest

from horse.metrics.text_metrics import cer, char_errors, edit_distance, normalize_text, tokenize, wer, word_errors


def test_edit_distance_known_pairs():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance("flaw", "lawn") == 2


def test_english_wer_by_hand():
    # ref 6 words; hyp: "sat"->"sit" (sub), "the" deleted, "today" inserted -> 3 edits
    assert wer("The cat sat on the mat", "the cat sit on mat today") == pytest.approx(3 / 6)


def test_normalisation_removes_case_punctuation_and_full_width():
    assert normalize_text("  Hello,   WORLD!! ") == "hello world"
    assert normalize_text("ＡＢＣ１２３") == "abc123"           # full-width -> half-width (NFKC)
    assert normalize_text("你好，世界。「测试」！") == "你好 世界 测试"
    assert normalize_text("Straße") == "strasse"
    assert normalize_text("Don't stop, it’s fine") == "dont stop its fine"
    assert wer("Hello, world!", "hello world") == 0.0


def test_cjk_characters_are_separate_tokens_in_mixed_text():
    assert tokenize("我今天用iPhone拍照") == ["我", "今", "天", "用", "iPhone", "拍", "照"]
    assert tokenize(normalize_text("我今天用 iPhone 拍照")) == ["我", "今", "天", "用", "iphone", "拍", "照"]
    assert tokenize("こんにちは世界") == list("こんにちは世界")
    assert tokenize("안녕하세요 여러분") == list("안녕하세요여러분")


def test_chinese_wer_equals_cer_by_hand():
    ref, hyp = "今天天气很好。", "今天天汽很好啊"
    # chars: 今天天气很好 (6) vs 今天天汽很好啊: 1 substitution + 1 insertion
    assert wer(ref, hyp) == pytest.approx(2 / 6)
    assert cer(ref, hyp) == pytest.approx(2 / 6)


def test_mixed_chinese_english_by_hand():
    ref = "我们明天去 Beijing 开会"
    hyp = "我们明天去北京开会"
    # ref tokens: 我 们 明 天 去 beijing 开 会 (8); hyp: 我 们 明 天 去 北 京 开 会 -> 1 sub + 1 ins = 2
    assert word_errors(ref, hyp).errors == 2 and word_errors(ref, hyp).reference_tokens == 8
    # characters: ref 我们明天去beijing开会 = 5 + 7 + 2 = 14; hyp 9; beijing (7) -> 北京 (2): 2 subs + 5 dels = 7
    assert char_errors(ref, hyp).errors == 7 and char_errors(ref, hyp).reference_tokens == 14


def test_japanese_and_korean_full_width_punctuation():
    assert cer("こんにちは、世界！", "こんにちは世界") == 0.0
    assert cer("안녕하세요, 여러분!", "안녕하세요 여러분") == 0.0
    assert cer("안녕하세요", "안녕하세오") == pytest.approx(1 / 5)


def test_corpus_rate_sums_edits_over_references():
    refs, hyps = ["a b c d", "e f"], ["a b x d", "e"]
    assert wer(refs, hyps) == pytest.approx((1 + 1) / 6)  # not the mean of per-utterance rates (0.25, 0.5)


def test_no_normalisation_keeps_case():
    assert wer("Hello", "hello", normalize=False) == 1.0


def test_empty_reference_gives_nan_and_mismatch_is_an_error():
    assert math.isnan(wer("", ""))
    with pytest.raises(ValueError, match="one transcript per reference"):
        wer(["a", "b"], ["a"])
