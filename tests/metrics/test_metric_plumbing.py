"""PLUMBING ONLY: every standard metric computed end to end on RANDOM weights at tiny sizes. These prove that
shapes, preprocessing and the loaders connect; they say nothing about the metrics' values, which need the real
weights (see horse/metrics/key_lists for what each loader expects)."""

import numpy as np
import pytest
import torch

from tests.metrics.conftest import TINY_CLIP, TINY_WHISPER

RNG = np.random.default_rng(0)


def _videos(n, t=10, h=40, w=48):
    return [RNG.integers(0, 256, (t, h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_fvd_plumbing_random_weights():
    from horse.metrics.frechet import frechet_distance_from_features
    from horse.metrics.fvd import InceptionI3d, fvd, i3d_features

    torch.manual_seed(0)
    model = InceptionI3d(final_pool=(2, 1, 1)).eval()  # 32 px input leaves 1x1 features; the real pool is 2x7x7
    a, b = _videos(2, t=9), [v // 4 for v in _videos(2, t=9)]
    feats_a, feats_b = i3d_features(model, a, size=32), i3d_features(model, b, size=32)
    assert feats_a.shape == (2, 400) and np.isfinite(feats_a).all()
    assert fvd(model, a, b, size=32) == pytest.approx(frechet_distance_from_features(feats_a, feats_b))
    assert frechet_distance_from_features(feats_a, feats_b) > 0
    model.final_pool = (2, 7, 7)
    with pytest.raises(ValueError, match="input too small"):
        i3d_features(model, a[:1], size=32)


def test_fad_plumbing_random_weights():
    from horse.metrics.fad import VGGish, fad, vggish_embeddings

    torch.manual_seed(0)
    model = VGGish().eval()
    real = [RNG.standard_normal(2 * 2048) * 0.1 for _ in range(2)]        # 2 s at the demo's 2048 Hz
    gen = [np.sin(np.arange(2 * 2048) * 0.3)[None] for _ in range(2)]    # [channels, S]
    assert vggish_embeddings(model, real, 2048).shape == (4, 128)          # 2 clips x 2 examples of 0.96 s
    assert fad(model, real, real, 2048) == pytest.approx(0.0, abs=1e-6)
    assert fad(model, real, gen, 2048) > 0
    with pytest.raises(ValueError, match="shorter than one VGGish example"):
        vggish_embeddings(model, [np.zeros(100)], 2048)


def test_sync_plumbing_random_weights():
    from horse.metrics.sync import SyncNet, center_square_crop, sync_scores

    torch.manual_seed(0)
    model = SyncNet().eval()
    frames = center_square_crop(RNG.integers(0, 256, (9, 32, 40, 3), dtype=np.uint8))
    assert frames.shape == (9, 224, 224, 3)
    scores = sync_scores(model, frames, RNG.standard_normal(16000 * 9 // 25) * 0.1, 16000, vshift=2)
    assert np.isfinite(scores.confidence) and scores.distance >= 0 and -2 <= scores.offset <= 2
    with pytest.raises(ValueError, match="too short"):
        sync_scores(model, frames[:5], np.zeros(16000), 16000)


def test_clip_score_plumbing_random_weights(tiny_clip_dir):
    from transformers import CLIPConfig, CLIPModel

    from horse.metrics.clip_score import clip_scores, load_clip
    from horse.metrics.loaders import hf_key_list

    model, tokenizer = load_clip(tiny_clip_dir, key_list=hf_key_list(CLIPModel, CLIPConfig, TINY_CLIP, model="tiny"))
    scores = clip_scores(model, tokenizer, _videos(2, t=3), ["a red ball", "a person talking"])
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)


def test_asr_wer_plumbing_random_weights(tiny_whisper_dir):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from horse.metrics.asr import load_whisper, transcribe
    from horse.metrics.loaders import hf_key_list
    from horse.metrics.text_metrics import wer

    keys = hf_key_list(WhisperForConditionalGeneration, WhisperConfig, TINY_WHISPER, model="tiny",
                       optional=["^proj_out\\.weight$"])
    model, processor = load_whisper(tiny_whisper_dir, key_list=keys)
    texts = transcribe(model, processor, [RNG.standard_normal(2048) * 0.1, RNG.standard_normal((2, 4096)) * 0.1],
                       2048, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert 0.0 <= wer("hello world", texts[0]) <= 1.0 + len(texts[0].split()) / 2
    with pytest.raises(ValueError, match="unknown language"):
        transcribe(model, processor, [np.zeros(2048)], 2048, language="xx")


def test_standard_suite_plumbing_random_weights(tiny_clip_dir, tiny_whisper_dir, tmp_path):
    from transformers import CLIPConfig, CLIPModel, WhisperConfig, WhisperForConditionalGeneration

    from eval.suites import SuiteContext, standard
    from horse.metrics.loaders import hf_key_list
    from horse.pipeline import init_checkpoint

    torch.set_num_threads(1)
    ckpt = init_checkpoint(tmp_path / "ckpt", model={"preset": "demo", "num_layers": 2, "mm_layers": [0, 1],
                                                     "gelu7_layers": [0]})
    keys = {"clip": hf_key_list(CLIPModel, CLIPConfig, TINY_CLIP, model="tiny"),
            "whisper": hf_key_list(WhisperForConditionalGeneration, WhisperConfig, TINY_WHISPER, model="tiny",
                                   optional=["^proj_out\\.weight$"])}
    cfg = {"suite": {"limit": 2, "generation": {"duration": 1, "steps": 1, "sampler": "euler"},
                     "weights": {"clip": str(tiny_clip_dir), "whisper": str(tiny_whisper_dir)}, "key_lists": keys,
                     "asr_max_new_tokens": 3}}
    result = standard.run(cfg, SuiteContext(checkpoint=ckpt, out_dir=tmp_path / "out", progress=False))
    assert result["groups"]["all"]["n"] == 2
    assert set(result["groups"]["all"]["scores"]) == {"clip_score", "wer", "cer"}
    assert set(result["settings"]["skipped"]) == {"sync", "fvd", "fad"}
    assert all(c["scores"]["wer"] is not None and c["scores"]["sync_confidence"] is None for c in result["clips"])
    assert "wer_corpus" in result["set_scores"]
