"""Demo audio codec: mono waveform at ``spec.audio_sample_rate`` -> orthonormal MDCT tokens.

Transform: frame k (k = 0 .. S/hop) is the 2*hop samples centred on sample k*hop (the waveform
is zero-padded by hop samples at both ends), windowed by the sine (Princen-Bradley) window and
projected on the hop MDCT-IV cosines with orthonormal scale sqrt(2/hop):

    X_k[m] = sqrt(2/N) * sum_n w[n] x_k[n] cos(pi/N * (n + 1/2 + N/2) * (m + 1/2)),  N = hop,
    w[n] = sin(pi * (n + 1/2) / (2N)),  n = 0 .. 2N-1.

Decoding is the same basis transposed followed by 50% overlap-add; time-domain aliasing cancels
(TDAC), so decode(encode(x)) == x up to float rounding, and the transform keeps energy
(sum of X^2 == sum of x^2). A windowed lapped transform is used rather than a block DCT so that
a generated latent with small errors decodes without clicks at the token boundaries.

A waveform of S samples (a multiple of hop) gives Na = S/hop + 1 tokens; for F video frames
S = F*4*hop and Na = 4F + 1 with token k centred at time k/(4 fps) (see spec.py for the RoPE
alignment). Latents are ``[B, hop, Na]`` (channel = MDCT bin m), multiplied by
``spec.audio_latent_scale``.
"""

import math
from fractions import Fraction

import numpy as np
import torch
from scipy.signal import resample_poly

from .spec import DEMO_CODEC_SPEC, DemoCodecSpec


def mdct_basis(hop: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Windowed orthonormal MDCT basis ``[2*hop, hop]`` (rows: time n, columns: bin m)."""
    # Hand-written: neither torch nor scipy ships an MDCT; a tiny dense basis is exact and fast enough here.
    n = torch.arange(2 * hop, dtype=torch.float64)[:, None]
    m = torch.arange(hop, dtype=torch.float64)[None, :]
    window = torch.sin(math.pi * (n + 0.5) / (2 * hop))
    cosines = torch.cos(math.pi / hop * (n + 0.5 + hop / 2) * (m + 0.5))
    return (math.sqrt(2.0 / hop) * window * cosines).to(dtype)


class DemoAudioCodec:
    """Training-free MDCT audio codec (see module docstring). Implements ``interface.AudioCodec``."""

    def __init__(self, spec: DemoCodecSpec = DEMO_CODEC_SPEC):
        self.spec = spec
        self.hop = spec.audio_hop
        self.latent_channels = spec.audio_latent_channels
        self.sample_rate = spec.audio_sample_rate
        self.scale = spec.audio_latent_scale
        self._basis = mdct_basis(self.hop)

    def latent_shape(self, num_samples: int) -> tuple[int, int]:
        self._check_num_samples(num_samples)
        return (self.latent_channels, num_samples // self.hop + 1)

    def _check_num_samples(self, num_samples: int) -> None:
        if num_samples < 0 or num_samples % self.hop:
            raise ValueError(
                f"audio length must be a multiple of the hop ({self.hop} samples at {self.sample_rate} Hz), "
                f"got {num_samples}; use prepare_waveform() to resample and crop/pad to a whole number of video frames"
            )

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, channels, S]`` float at ``sample_rate`` (channels averaged to mono) -> ``[B, hop, S/hop + 1]``."""
        if waveform.ndim != 3 or not waveform.is_floating_point():
            raise ValueError(
                f"waveform must be a float tensor [B, channels, samples], got {waveform.dtype} {tuple(waveform.shape)}"
            )
        self._check_num_samples(waveform.shape[-1])
        mono = waveform.mean(dim=1)
        padded = torch.nn.functional.pad(mono, (self.hop, self.hop))
        frames = padded.unfold(-1, 2 * self.hop, self.hop)  # [B, Na, 2*hop], frame k centred on sample k*hop
        coefs = frames @ self._basis.to(mono)
        return coefs.transpose(1, 2) * self.scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[B, hop, Na]`` -> mono ``[B, 1, (Na - 1) * hop]`` at ``sample_rate``."""
        if latent.ndim != 3 or latent.shape[1] != self.latent_channels or latent.shape[2] < 1:
            raise ValueError(
                f"audio latent must be [B, {self.latent_channels}, Na] with Na >= 1, got shape {tuple(latent.shape)}"
            )
        if not latent.is_floating_point():
            raise ValueError(f"audio latent must be a float tensor, got {latent.dtype}")
        batch, _, num_tokens = latent.shape
        frames = (latent.transpose(1, 2) / self.scale) @ self._basis.to(latent).T  # [B, Na, 2*hop]
        blocks = latent.new_zeros(batch, num_tokens + 1, self.hop)  # hop-sized blocks of the padded signal
        blocks[:, :-1] += frames[..., : self.hop]
        blocks[:, 1:] += frames[..., self.hop :]
        # Blocks 0 and Na are the zero padding (only half-reconstructed); drop them.
        return blocks[:, 1:-1].reshape(batch, 1, (num_tokens - 1) * self.hop)


def resample(waveform: torch.Tensor, orig_rate: int, target_rate: int) -> torch.Tensor:
    """Resample along the last axis with scipy's polyphase FIR (Kaiser window, beta 5, zero delay).

    Output length is ceil(S * target / orig). Timing is preserved (the filter is delay-compensated),
    so an onset at t seconds stays at t seconds, smeared by about 10 output samples.
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return waveform
    ratio = Fraction(target_rate, orig_rate)
    source = waveform.detach().cpu().numpy()
    out = resample_poly(source, ratio.numerator, ratio.denominator, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).to(dtype=waveform.dtype, device=waveform.device)


def prepare_waveform(
    waveform: torch.Tensor, sample_rate: int, num_video_frames: int, spec: DemoCodecSpec = DEMO_CODEC_SPEC
) -> torch.Tensor:
    """Any ``[B, channels, S]`` waveform -> mono ``[B, 1, F * 4 * hop]`` at ``spec.audio_sample_rate``.

    Resamples, averages channels, then crops or zero-pads the end to exactly F video frames.
    """
    if waveform.ndim != 3 or not waveform.is_floating_point():
        raise ValueError(
            f"waveform must be a float tensor [B, channels, samples], got {waveform.dtype} {tuple(waveform.shape)}"
        )
    if num_video_frames < 0:
        raise ValueError(f"num_video_frames must be >= 0, got {num_video_frames}")
    mono = resample(waveform.mean(dim=1, keepdim=True), sample_rate, spec.audio_sample_rate)
    length = spec.audio_num_samples(num_video_frames)
    if mono.shape[-1] >= length:
        return mono[..., :length]
    return torch.nn.functional.pad(mono, (0, length - mono.shape[-1]))
