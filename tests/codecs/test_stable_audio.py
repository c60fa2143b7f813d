"""Stable Audio Open VAE codec: key mapping against the published names, a tiny published-layout folder, rates."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("scipy")
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")  # diffusers' Oobleck uses the old API
from diffusers import AutoencoderOobleck  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from horse.codecs.key_maps import STABLE_AUDIO_OPEN_VAE_KEYS_FILE, load_published_keys  # noqa: E402
from horse.codecs.key_maps.oobleck import diffusers_to_original, original_to_diffusers, snake_to_original  # noqa: E402
from horse.codecs.stable_audio import (  # noqa: E402
    OUTPUT_SAMPLE_RATE,
    PIPELINE_SAMPLE_RATE,
    StableAudioCodec,
    oobleck_kwargs_from_model_config,
    prepare_waveform,
    to_output_rate,
)


def model_config(channels, c_mults, strides, latent):
    """A `model_config.json` in the layout Stable Audio Open publishes (only the parts the codec reads)."""
    oobleck = dict(channels=channels, c_mults=c_mults, strides=strides, use_snake=True)
    return {
        "model_type": "diffusion_cond",
        "sample_rate": 44100,
        "model": {
            "pretransform": {
                "type": "autoencoder",
                "config": {
                    "encoder": {"type": "oobleck", "config": {**oobleck, "in_channels": 2, "latent_dim": 2 * latent}},
                    "decoder": {"type": "oobleck", "config": {**oobleck, "out_channels": 2, "latent_dim": latent,
                                                              "final_tanh": False}},  # fmt: skip
                    "bottleneck": {"type": "vae"},
                    "latent_dim": latent,
                    "downsampling_ratio": int(np.prod(strides)),
                    "io_channels": 2,
                },
            }
        },
    }


RELEASE = model_config(128, [1, 2, 4, 8, 16], [2, 4, 4, 8, 8], 64)
TINY = model_config(8, [1, 2, 4], [2, 4, 8], 4)  # hop 64


def test_mapping_reproduces_the_published_checkpoint_names_and_shapes():
    published = load_published_keys(STABLE_AUDIO_OPEN_VAE_KEYS_FILE)
    kwargs = oobleck_kwargs_from_model_config(RELEASE)
    assert kwargs["decoder_input_channels"] == 64 and np.prod(kwargs["downsampling_ratios"]) == 2048
    with torch.device("meta"):
        vae = AutoencoderOobleck(**kwargs)
    ours = {name: value.shape for name, value in vae.state_dict().items()}
    assert {original_to_diffusers(name) for name in published} == set(ours)
    inverse = {
        diffusers_to_original(name, len(kwargs["downsampling_ratios"])): tuple(
            snake_to_original(name, torch.empty(shape, device="meta")).shape
        )
        for name, shape in ours.items()
    }
    assert inverse == published


@pytest.mark.parametrize(
    "published, diffusers",
    [
        ("encoder.layers.0.weight_g", "encoder.conv1.weight_g"),
        ("encoder.layers.1.layers.0.layers.1.weight_v", "encoder.block.0.res_unit1.conv1.weight_v"),
        ("encoder.layers.2.layers.2.layers.2.alpha", "encoder.block.1.res_unit3.snake2.alpha"),
        ("encoder.layers.5.layers.3.beta", "encoder.block.4.snake1.beta"),
        ("encoder.layers.5.layers.4.bias", "encoder.block.4.conv1.bias"),
        ("encoder.layers.6.alpha", "encoder.snake1.alpha"),
        ("encoder.layers.7.weight_g", "encoder.conv2.weight_g"),
        ("decoder.layers.1.layers.0.alpha", "decoder.block.0.snake1.alpha"),
        ("decoder.layers.1.layers.1.weight_v", "decoder.block.0.conv_t1.weight_v"),
        ("decoder.layers.3.layers.2.layers.3.bias", "decoder.block.2.res_unit1.conv2.bias"),
        ("decoder.layers.5.layers.4.layers.0.beta", "decoder.block.4.res_unit3.snake1.beta"),
        ("decoder.layers.7.weight_v", "decoder.conv2.weight_v"),
    ],
)
def test_mapping_routes(published, diffusers):
    assert "pretransform.model." + published in load_published_keys(STABLE_AUDIO_OPEN_VAE_KEYS_FILE)
    assert original_to_diffusers("pretransform.model." + published) == diffusers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny AutoencoderOobleck and a Stable-Audio-like folder holding it in the published layout."""
    torch.manual_seed(0)
    kwargs = oobleck_kwargs_from_model_config(TINY)
    source = AutoencoderOobleck(**kwargs).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    n = len(kwargs["downsampling_ratios"])
    published = {diffusers_to_original(k, n): snake_to_original(k, v).clone() for k, v in source.state_dict().items()}
    folder = tmp_path_factory.mktemp("stable-audio-open")
    save_file({**published, "model.model.transformer.layers.0.weight": torch.zeros(2)}, folder / "model.safetensors")
    (folder / "model_config.json").write_text(json.dumps(TINY))
    return source, published, folder


def test_loads_only_the_vae_tensors_where_they_belong(tiny):
    source, _, folder = tiny
    codec = StableAudioCodec.from_pretrained(folder)
    loaded, expected = codec.vae.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(loaded[name], expected[name], rtol=0, atol=0, msg=name)
    assert codec.hop_length == 64 and codec.latent_channels == 4 and codec.sample_rate == PIPELINE_SAMPLE_RATE


def test_posterior_halves_sampling_and_decode(tiny):
    source, _, folder = tiny
    codec = StableAudioCodec.from_pretrained(folder)
    waveform = torch.randn(2, 2, 64 * 6) * 0.3
    posterior = codec.encode(waveform)
    with torch.no_grad():
        h = source.encoder(waveform)  # 2 x latent channels: mean, then scale
    assert posterior.mean.shape == (2, 4, 6) and codec.latent_shape(64 * 6 + 5) == (4, 6)
    torch.testing.assert_close(posterior.mean, h[:, :4])
    torch.testing.assert_close(posterior.scale, h[:, 4:])
    std = torch.nn.functional.softplus(h[:, 4:]) + 1e-4
    noise = torch.randn(h[:, :4].shape, generator=torch.Generator().manual_seed(3))
    latent = codec.sample(posterior, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(latent, h[:, :4] + std * noise)
    decoded = codec.decode(latent)
    assert decoded.shape == (2, 2, 64 * 6)
    with torch.no_grad():
        torch.testing.assert_close(decoded, source.decode(latent).sample)


def test_latent_rate_of_the_release_is_25_per_second():
    assert PIPELINE_SAMPLE_RATE / 2048 == 25 and OUTPUT_SAMPLE_RATE == 44100


def test_prepare_waveform_resamples_to_51200_and_duplicates_mono():
    rate, seconds, freq = 44100, 0.2, 440.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = np.sin(2 * np.pi * freq * t), 0.5 * np.sin(2 * np.pi * freq * t)
    out = prepare_waveform(np.stack([left, right]), rate)
    assert out.shape == (1, 2, int(PIPELINE_SAMPLE_RATE * seconds)) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], out[:, 1])  # mixed to mono, then duplicated
    t_new = np.arange(out.shape[-1]) / PIPELINE_SAMPLE_RATE
    expected = 0.75 * np.sin(2 * np.pi * freq * t_new)
    inner = slice(200, -200)  # away from the filter's edge transients
    np.testing.assert_allclose(out[0, 0, inner].numpy(), expected[inner], atol=2e-3)
    stereo = prepare_waveform(torch.tensor(np.stack([left, right])), rate, mono=False)
    np.testing.assert_allclose(stereo[0, 1, inner].numpy(), 0.5 * np.sin(2 * np.pi * freq * t_new)[inner], atol=2e-3)
    same_rate = prepare_waveform(torch.ones(100), PIPELINE_SAMPLE_RATE)
    assert same_rate.shape == (1, 2, 100)
    with pytest.raises(ValueError, match="C = 1 or 2"):
        prepare_waveform(np.zeros((3, 100)), rate)


@pytest.mark.parametrize("method", ["fft", "poly"])
def test_to_output_rate_keeps_pitch_and_duration(method):
    n, freq = 5120, 1000.0  # 0.1 s at 51.2 kHz, a whole number of periods (the FFT method is circular)
    decoded = torch.sin(2 * np.pi * freq * torch.arange(n) / PIPELINE_SAMPLE_RATE).repeat(1, 2, 1)
    out = to_output_rate(decoded, method)
    assert out.shape == (1, 2, n * 441 // 512) and out.dtype == np.float32
    expected = np.sin(2 * np.pi * freq * np.arange(out.shape[-1]) / OUTPUT_SAMPLE_RATE)
    np.testing.assert_allclose(out[0, 0, 200:-200], expected[200:-200], atol=2e-3)


def test_missing_files_and_unsupported_configs_are_clear_errors(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        StableAudioCodec.from_pretrained(tmp_path)
    (tmp_path / "model_config.json").write_text(json.dumps(TINY))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        StableAudioCodec.from_pretrained(tmp_path)
    save_file({"model.model.x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="pretransform.model."):
        StableAudioCodec.from_pretrained(tmp_path)
    _, published, _ = tiny
    save_file({k: v for k, v in published.items() if "decoder.layers.0." not in k}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing.*decoder\.conv1\.weight_g"):
        StableAudioCodec.from_pretrained(tmp_path)
    tanh = json.loads(json.dumps(TINY))
    tanh["model"]["pretransform"]["config"]["decoder"]["config"]["final_tanh"] = True
    with pytest.raises(ValueError, match="tanh"):
        oobleck_kwargs_from_model_config(tanh)
