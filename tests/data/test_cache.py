"""Latent cache: contents equal the demo codecs applied to the decoded clip; hit / miss / stale; concurrent builds."""

import json
import multiprocessing

import numpy as np
import pytest
import torch

from horse.codecs.demo import DEMO_CODEC_SPEC, DemoAudioCodec, prepare_waveform
from horse.data.av_io import encode_mp4
from horse.data.cache import (MANIFEST_NAME, DemoCodecBundle, StaleCacheError, cache_dataset, cache_inputs,
                              check_cache, diff_inputs, sample_audio_latent, to_training_sample)
from horse.data.decode import ClipConfig, decode_clip
from horse.data.shards import read_shards, write_shards

FPS, SR = 8, 2048
CFG = ClipConfig(fps=FPS, frame_counts=(8,), sizes=((16, 16),), sample_rate=SR)


def _raw(i):
    rng = np.random.default_rng(i)
    frames = rng.integers(0, 256, (10, 16, 24, 3), dtype=np.uint8)
    t = np.arange(10 * SR // FPS) / SR
    audio = (0.4 * np.sin(2 * np.pi * (150 + 50 * i) * t)).astype(np.float32)[None]
    return {"__key__": f"clip{i}", "mp4": encode_mp4(frames, audio, FPS, SR), "json": {"caption": f"a red square {i}",
                                                                                      "truth": [i, i + 1]}}


@pytest.fixture(scope="module")
def bundle():
    return DemoCodecBundle()


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    write_shards([_raw(i) for i in range(3)], d, max_count=2)
    return d


def test_cached_latents_match_the_codecs(bundle, raw_dir, tmp_path):
    report = cache_dataset(raw_dir, tmp_path / "c", bundle, CFG)
    assert report.status == "built" and report.manifest["num_samples"] == 3
    raws = {r["__key__"]: r for r in read_shards(raw_dir, decode=False)}
    cached = list(read_shards(tmp_path / "c"))
    assert sorted(s["__key__"] for s in cached) == sorted(raws)
    for s in cached:
        clip = decode_clip(raws[s["__key__"]], CFG)
        # independent space-to-depth: latent[c*16 + dy*4 + dx, f, y, x] = pixel(4y+dy, 4x+dx, c) in [-1, 1]
        pix = clip.frames.astype(np.float32) / 127.5 - 1
        f, h, w, _ = pix.shape
        expect = pix.reshape(f, h // 4, 4, w // 4, 4, 3).transpose(5, 2, 4, 0, 1, 3).reshape(48, f, h // 4, w // 4)
        np.testing.assert_allclose(s["video.npy"], expect, atol=1e-6)
        wave = prepare_waveform(torch.from_numpy(clip.audio)[None], SR, f)
        audio = DemoAudioCodec().encode(wave)[0].T.numpy()
        np.testing.assert_allclose(s["audio_mean.npy"], audio, atol=1e-5)
        assert s["audio_mean.npy"].shape == (DEMO_CODEC_SPEC.audio_num_tokens(8), 64)
        assert not s["audio_scale.npy"].any()  # deterministic codec: zero posterior scale
        np.testing.assert_allclose(s["text.npy"], bundle.text.encode(clip.caption).numpy(), atol=1e-6)
        assert s["json"]["caption"] == clip.caption and s["json"]["meta"]["truth"] == clip.meta["truth"]
        assert s["json"]["bucket"] == [8, 16, 16] and s["json"]["cache_hash"] == report.manifest["hash"]
        sample = to_training_sample(s)
        assert torch.equal(sample["audio"], torch.from_numpy(s["audio_mean.npy"]))


def test_hit_miss_stale(bundle, raw_dir, tmp_path):
    out = tmp_path / "c"
    assert cache_dataset(raw_dir, out, bundle, CFG).status == "built"  # miss
    shard = sorted(out.glob("*.tar"))[0]
    mtime = shard.stat().st_mtime_ns
    assert cache_dataset(raw_dir, out, bundle, CFG).status == "hit"
    assert shard.stat().st_mtime_ns == mtime  # nothing rewritten
    check_cache(out, cache_inputs(bundle, CFG))
    other = ClipConfig(fps=4, frame_counts=(4,), sizes=((16, 16),), sample_rate=SR)
    with pytest.raises(StaleCacheError, match=r"clip\.fps: 8\.0 -> 4\.0"):
        check_cache(out, cache_inputs(bundle, other))
    with pytest.raises(StaleCacheError, match="latent_dtype: 'float32' -> 'float16'"):
        check_cache(out, cache_inputs(bundle, CFG, "float16"))
    with pytest.raises(StaleCacheError, match="hash"):
        check_cache(out, "0" * 64)
    with pytest.raises(StaleCacheError, match="clip.fps"):
        cache_dataset(raw_dir, out, bundle, other)  # refuses to overwrite without being asked
    rebuilt = cache_dataset(raw_dir, out, bundle, other, overwrite=True)
    assert rebuilt.status == "built" and check_cache(out, cache_inputs(bundle, other))["hash"] == rebuilt.manifest["hash"]
    assert len(list(read_shards(out))) == 3  # old shards were replaced, not mixed in


def test_codec_identity_change_is_named(bundle, raw_dir, tmp_path):
    cache_dataset(raw_dir, tmp_path, bundle, CFG)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    changed = json.loads(json.dumps(manifest["inputs"]))
    changed["codec"]["text_assets"]["model.safetensors"] = "f" * 64
    with pytest.raises(StaleCacheError, match=r"codec\.text_assets\.model\.safetensors"):
        check_cache(tmp_path, changed)


def _call_cache(raw_dir, out, barrier, queue):
    barrier.wait()
    report = cache_dataset(str(raw_dir), out, DemoCodecBundle(), CFG, max_count=2)
    queue.put(report.status)


def test_concurrent_runs_build_the_cache_once(raw_dir, tmp_path):
    # two training runs starting together used to write the same shard names at once and crash
    context = multiprocessing.get_context("spawn")  # a fork after torch ran its thread pool can deadlock
    barrier, queue = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_call_cache, args=(raw_dir, tmp_path / "c", barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    statuses = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert statuses == ["built", "hit"]
    assert len(list(read_shards(str(tmp_path / "c" / "latents-*.tar")))) == 3


def test_incomplete_and_missing_cache(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_cache(tmp_path / "nope", "x")
    with pytest.raises(StaleCacheError, match="incomplete"):
        check_cache(tmp_path, "x")


def test_diff_inputs_and_posterior_sampling():
    assert diff_inputs({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0}) == ["b.c: 2 -> 3", "d: added (0)"]
    mean, scale = torch.full((2000, 4), 0.5), torch.full((2000, 4), 2.0)
    draw = sample_audio_latent(mean, scale, torch.Generator().manual_seed(0))
    assert abs(draw.mean().item() - 0.5) < 0.1 and abs(draw.std().item() - 2.0) < 0.1
    again = sample_audio_latent(mean, scale, torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)


def test_real_bundle_audio_posterior_is_mean_and_std():
    """The Stable Audio adapter stores the posterior's mean and std as [T, C] tokens (tiny random VAE)."""
    import warnings

    from diffusers import AutoencoderOobleck

    from horse.codecs.stable_audio import StableAudioCodec, prepare_waveform as sa_prepare
    from horse.data.cache import RealCodecBundle

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        vae = AutoencoderOobleck(encoder_hidden_size=4, downsampling_ratios=[2, 4], channel_multiples=[1, 2],
                                 decoder_channels=4, decoder_input_channels=8, audio_channels=2)
    codec = StableAudioCodec(vae)
    bundle = RealCodecBundle(None, codec, None, {"kind": "test"})
    wave = (0.1 * np.random.default_rng(0).standard_normal((1, 4410))).astype(np.float32)
    mean, scale = bundle.encode_audio(wave, 44100, 4)
    posterior = codec.encode(sa_prepare(wave, 44100))
    np.testing.assert_allclose(mean, posterior.mean[0].T.numpy(), atol=1e-6)
    np.testing.assert_allclose(scale, posterior.std[0].T.numpy(), atol=1e-6)
    assert mean.shape[0] == codec.latent_shape(sa_prepare(wave, 44100).shape[-1])[1] and (scale > 0).all()
