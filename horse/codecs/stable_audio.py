"""Audio codec: the Stable Audio Open 1.0 VAE (Oobleck) through diffusers' `AutoencoderOobleck`.

Loaded from the published folder (`model_config.json` + `model.safetensors`), using only the
tensors prefixed `pretransform.model.`.

Rate conventions of daVinci-MagiHuman (time stretching): the VAE was trained at 44.1 kHz, but the
pipeline feeds it audio resampled to 51.2 kHz and reads its output as 51.2 kHz audio. With a hop of
2048 samples this gives 25 latent frames per second, the video frame rate. So:
  - input audio at any rate -> `prepare_waveform` (resample to 51.2 kHz, mono duplicated to stereo) -> `encode`;
  - `decode` -> waveform at 51.2 kHz -> `to_output_rate` (x 441/512) -> write at 44.1 kHz.
Latents are channel-first, [B, 64, T], like diffusers; the DiT side uses [T, 64] tokens.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from horse.codecs.key_maps import convert_state_dict, expected_shapes
from horse.codecs.key_maps.oobleck import PUBLISHED_PREFIX, original_to_diffusers, snake_to_diffusers

PIPELINE_SAMPLE_RATE = 51_200  # rate the pipeline pretends the VAE works at: 51200 / 2048 = 25 latents per second
OUTPUT_SAMPLE_RATE = 44_100  # rate of the written audio (the VAE's true training rate)
AUDIO_CHANNELS = 2
CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"


def oobleck_kwargs_from_model_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """AutoencoderOobleck arguments from a Stable Audio `model_config.json` (its pretransform section)."""
    try:
        vae = model_config["model"]["pretransform"]["config"]
        enc, dec = vae["encoder"]["config"], vae["decoder"]["config"]
    except KeyError as error:
        raise ValueError(f"{CONFIG_FILE} has no model.pretransform.config.encoder/decoder section ({error})") from None
    unsupported = {
        "encoder/decoder strides differ": enc["strides"] != dec["strides"],
        "encoder/decoder c_mults differ": enc["c_mults"] != dec["c_mults"],
        "snake activations are off": not (enc.get("use_snake") and dec.get("use_snake")),
        "the decoder ends in tanh": dec.get("final_tanh", True),
        "the decoder uses nearest upsampling": dec.get("use_nearest_upsample", False),
        "antialiased activations are on": enc.get("antialias_activation") or dec.get("antialias_activation"),
        # diffusers' encoder emits encoder_hidden_size channels: mean and scale of the decoder's latent
        "encoder latent_dim != channels != 2 x decoder latent_dim": not (
            enc["latent_dim"] == enc["channels"] == 2 * dec["latent_dim"]
        ),
    }
    problems = [reason for reason, bad in unsupported.items() if bad]
    if problems:
        raise ValueError(f"this Oobleck VAE cannot be built with diffusers' AutoencoderOobleck: {', '.join(problems)}")
    return dict(
        encoder_hidden_size=enc["channels"],
        downsampling_ratios=list(enc["strides"]),
        channel_multiples=list(enc["c_mults"]),
        decoder_channels=dec["channels"],
        decoder_input_channels=dec["latent_dim"],
        audio_channels=vae["io_channels"],
        sampling_rate=model_config["sample_rate"],
    )


def _as_numpy(waveform: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        return waveform.detach().cpu().float().numpy()
    return np.asarray(waveform, dtype=np.float32)


def _resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if source_rate == target_rate:
        return x
    common = math.gcd(source_rate, target_rate)
    return resample_poly(x, target_rate // common, source_rate // common, axis=-1)


def prepare_waveform(waveform: torch.Tensor | np.ndarray, sample_rate: int, mono: bool = True) -> torch.Tensor:
    """Any audio -> the VAE's input: float32 [B, 2, N'] at PIPELINE_SAMPLE_RATE (polyphase resampling).

    `waveform` is [N], [C, N] or [B, C, N] with C in {1, 2}. With `mono` (the official reference-audio
    path, which loads audio as mono) the channels are averaged first; the mono signal is then
    duplicated to both channels.
    """
    x = _as_numpy(waveform)
    shape = x.shape
    x = x.reshape((1, 1, -1) if x.ndim == 1 else (1, *shape) if x.ndim == 2 else shape)
    if x.ndim != 3 or x.shape[1] not in (1, AUDIO_CHANNELS) or x.shape[-1] == 0:
        raise ValueError(f"waveform must be [N], [C, N] or [B, C, N] with C = 1 or 2, got shape {shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if mono or x.shape[1] == 1:
        x = np.repeat(x.mean(axis=1, keepdims=True), AUDIO_CHANNELS, axis=1)
    return torch.from_numpy(np.ascontiguousarray(_resample(x, sample_rate, PIPELINE_SAMPLE_RATE), dtype=np.float32))


def to_output_rate(waveform: torch.Tensor | np.ndarray, method: str = "fft") -> np.ndarray:
    """Decoded audio (read as PIPELINE_SAMPLE_RATE) -> OUTPUT_SAMPLE_RATE along the last axis, float32 numpy.

    "fft" is what the official pipeline does (scipy.signal.resample to int(N * 441 / 512) samples);
    "poly" is polyphase filtering (scipy.signal.resample_poly 441/512), without the FFT's circular wrap.
    """
    from scipy.signal import resample

    x = _as_numpy(waveform)
    if method == "fft":
        out = resample(x, int(x.shape[-1] * OUTPUT_SAMPLE_RATE / PIPELINE_SAMPLE_RATE), axis=-1)
    elif method == "poly":
        out = _resample(x, PIPELINE_SAMPLE_RATE, OUTPUT_SAMPLE_RATE)
    else:
        raise ValueError(f"method must be 'fft' or 'poly', got {method!r}")
    return out.astype(np.float32)


class StableAudioCodec:
    """Stereo waveform at 51.2 kHz <-> Oobleck latents [B, 64, T] (25 per second). `vae` is the diffusers module."""

    def __init__(self, vae: "AutoencoderOobleck"):  # noqa: F821 (diffusers is imported lazily)
        self.vae = vae.eval().requires_grad_(False)
        self.hop_length = math.prod(vae.config.downsampling_ratios)
        self.latent_channels = vae.config.decoder_input_channels
        self.sample_rate = PIPELINE_SAMPLE_RATE  # rate encode expects and decode returns
        self.latent_rate = PIPELINE_SAMPLE_RATE / self.hop_length

    def latent_shape(self, num_samples: int) -> tuple[int, int]:
        """(C, T) of the latent of `num_samples` samples: each strided conv floors, so T = num_samples // hop."""
        if num_samples < self.hop_length:
            raise ValueError(f"need at least {self.hop_length} samples, got {num_samples}")
        return self.latent_channels, num_samples // self.hop_length

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> "StableAudioCodec":
        """Load from the published Stable Audio Open folder (model_config.json + model.safetensors)."""
        from diffusers import AutoencoderOobleck
        from safetensors import safe_open

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"Stable Audio Open file not found: {path}")
        with open(config_path) as f:
            kwargs = oobleck_kwargs_from_model_config(json.load(f))
        with safe_open(weights_path, framework="pt") as f:  # reads only the VAE's tensors of the full checkpoint
            state_dict = {key: f.get_tensor(key) for key in f.keys() if key.startswith(PUBLISHED_PREFIX)}
        if not state_dict:
            raise ValueError(f"{weights_path} has no tensors prefixed {PUBLISHED_PREFIX!r}")
        with torch.device("meta"), warnings.catch_warnings():  # no random init: every tensor comes from the file
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)  # diffusers' own use
            vae = AutoencoderOobleck(**kwargs)
        converted = convert_state_dict(
            state_dict, original_to_diffusers, expected_shapes(vae), str(weights_path), reshape=snake_to_diffusers
        )
        vae.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True, assign=True)
        return cls(vae.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> "OobleckDiagonalGaussianDistribution":  # noqa: F821
        """[B, 2, N] at 51.2 kHz (see `prepare_waveform`) -> posterior over [B, 64, N // 2048] latents.

        The posterior's `mean` and `scale` are the two halves of the encoder output; its std is
        softplus(scale) + 1e-4. Draw a latent with `sample`.
        """
        if waveform.ndim != 3 or waveform.shape[1] != AUDIO_CHANNELS:
            raise ValueError(f"waveform must be [B, {AUDIO_CHANNELS}, N], got {tuple(waveform.shape)}")
        return self.vae.encode(waveform.to(self.device, self.dtype)).latent_dist

    @staticmethod
    def sample(posterior, generator: torch.Generator | None = None) -> torch.Tensor:
        """A latent mean + std * noise, float32 (the noise comes from `generator`, else the global RNG)."""
        return posterior.sample(generator=generator).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 64, T] -> waveform [B, 2, T * 2048], float32, to be read at 51.2 kHz (see `to_output_rate`)."""
        if latents.ndim != 3 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, T], got {tuple(latents.shape)}")
        return self.vae.decode(latents.to(self.device, self.dtype)).sample.float()
