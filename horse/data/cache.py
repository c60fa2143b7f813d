"""Latent cache: encode video, audio and text once, write latent shards keyed by a hash.

A cache folder holds ``latents-*.tar`` shards and ``cache_manifest.json`` (written last, so a
crashed run leaves no manifest and is never mistaken for a complete cache). The hash covers every
input that determines the latents: the codec bundle's identity (weight/asset file hashes and
settings), the ``ClipConfig`` (fps, frame counts, sizes, crop, window policy, seed, audio rate), the
stored dtype and the format version. ``check_cache`` compares a folder with the inputs a training run
expects and raises ``StaleCacheError`` naming each input that changed.

Cached sample: ``video.npy`` [C,T,h,w], ``audio_mean.npy`` / ``audio_scale.npy`` [Na,Ca] (posterior
mean and std; a latent is ``mean + scale * noise``, drawn at training time by ``sample_audio_latent``;
deterministic codecs store scale 0), ``text.npy`` [L,C] and ``json`` (caption, the source json as
``meta``, bucket, window start, shapes, cache hash).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from .decode import ClipConfig, SampleDecoder
from .locks import exclusive_lock
from .shards import expand_shards, write_shards

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "cache_manifest.json"
SHARD_PREFIX = "latents"
LATENT_DTYPES = ("float32", "float16")
HASH_CHUNK_BYTES = 1 << 24


class StaleCacheError(ValueError):
    """The cache was built from other inputs than the ones asked for (the message lists them).
    A ValueError so CLIs report it as a clear error."""


class CodecBundle(Protocol):
    """The adapter the cache needs around a video codec, an audio codec and a text encoder."""

    def identity(self) -> dict:
        """JSON-able description of everything that determines the latents (weight hashes, settings)."""

    def encode_video(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[F, H, W, 3]`` -> latent ``[C, T, h, w]`` float32."""

    def encode_audio(self, audio: np.ndarray, sample_rate: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``[channels, S]`` of a ``num_frames`` clip -> posterior (mean, scale) ``[Na, Ca]``."""

    def encode_text(self, caption: str) -> np.ndarray:
        """caption -> features ``[L, C]`` float32."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: str | Path, names=None) -> dict[str, str]:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if names is None else [folder / n for n in names]
    return {str(p.relative_to(folder)): file_sha256(p) for p in files}


class DemoCodecBundle:
    """The training-free demo codecs (``horse.codecs.demo``); audio is deterministic (scale 0)."""

    def __init__(self, spec=None, text_encoder=None):
        from horse.codecs.demo import DEMO_CODEC_SPEC, DemoAudioCodec, DemoTextEncoder, DemoVideoCodec
        self.spec = spec or DEMO_CODEC_SPEC
        self.video = DemoVideoCodec(self.spec)
        self.audio = DemoAudioCodec(self.spec)
        self.text = text_encoder or DemoTextEncoder.load(max_length=self.spec.text_max_length)

    def identity(self) -> dict:
        from dataclasses import asdict
        from horse.codecs.demo.build_text_assets import ASSETS_DIR, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
        return {"kind": "demo", "spec": json.loads(json.dumps(asdict(self.spec))),
                "text_assets": folder_sha256(ASSETS_DIR, (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE)),
                "text_max_length": self.text.max_length}

    def encode_video(self, frames):
        from horse.codecs.demo import frames_to_video
        return self.video.encode(frames_to_video(frames))[0].numpy()

    def encode_audio(self, audio, sample_rate, num_frames):
        from horse.codecs.demo import prepare_waveform
        wave = prepare_waveform(torch.from_numpy(audio)[None], sample_rate, num_frames, self.spec)
        mean = self.audio.encode(wave)[0].T.contiguous().numpy()  # [Na, 64]
        return mean, np.zeros_like(mean)

    def encode_text(self, caption):
        return self.text.encode(caption).numpy()


class RealCodecBundle:
    """Wan2.2 video VAE + Stable Audio Open VAE (posterior mean/std) + T5Gemma text encoder.

    ``identity`` must describe the weights; ``from_paths`` hashes the weight files (slow once for
    multi-GB files, which is the price of a cache that cannot silently go stale)."""

    def __init__(self, video, audio, text, identity: dict):
        self.video, self.audio, self.text, self._identity = video, audio, text, identity

    @classmethod
    def from_paths(cls, wan_vae: str | Path, stable_audio: str | Path, t5gemma: str | Path,
                   device: str = "cpu", dtype: torch.dtype = torch.float32) -> "RealCodecBundle":
        from horse.codecs.stable_audio import CONFIG_FILE, WEIGHTS_FILE, StableAudioCodec
        from horse.codecs.t5gemma_text import T5GemmaTextEncoder
        from horse.codecs.wan_video import WanVideoCodec
        text = T5GemmaTextEncoder.from_pretrained(t5gemma, device=device)
        identity = {"kind": "real", "wan_vae": file_sha256(wan_vae),
                    "stable_audio": folder_sha256(stable_audio, (CONFIG_FILE, WEIGHTS_FILE)),
                    "t5gemma": folder_sha256(t5gemma), "text_max_length": text.max_length, "dtype": str(dtype)}
        return cls(WanVideoCodec.from_pth(wan_vae, dtype, device), StableAudioCodec.from_pretrained(
            stable_audio, dtype, device), text, identity)

    def identity(self) -> dict:
        return dict(self._identity)

    def encode_video(self, frames):
        from horse.codecs.demo import frames_to_video  # the uint8 -> [-1, 1] mapping is codec-independent
        return self.video.encode(frames_to_video(frames))[0].cpu().numpy()

    def encode_audio(self, audio, sample_rate, num_frames):
        from horse.codecs.stable_audio import prepare_waveform
        posterior = self.audio.encode(prepare_waveform(audio, sample_rate))
        return (posterior.mean[0].T.float().cpu().numpy(), posterior.std[0].T.float().cpu().numpy())

    def encode_text(self, caption):
        return self.text.encode(caption).cpu().numpy()


def cache_inputs(bundle: CodecBundle, cfg: ClipConfig, latent_dtype: str = "float32") -> dict:
    if latent_dtype not in LATENT_DTYPES:
        raise ValueError(f"latent_dtype must be one of {LATENT_DTYPES}, got {latent_dtype!r}")
    return {"format": CACHE_FORMAT_VERSION, "codec": bundle.identity(), "clip": cfg.to_dict(),
            "latent_dtype": latent_dtype}


def inputs_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def diff_inputs(old, new, path: str = "") -> list[str]:
    """Human-readable differences ``"clip.fps: 8.0 -> 12.0"`` between two nested input dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{name}: added ({new[key]!r})")
            elif key not in new:
                out.append(f"{name}: removed (was {old[key]!r})")
            else:
                out.extend(diff_inputs(old[key], new[key], name))
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def read_manifest(cached_dir: str | Path) -> dict:
    path = Path(cached_dir) / MANIFEST_NAME
    if not Path(cached_dir).is_dir():
        raise FileNotFoundError(f"latent cache folder {cached_dir} does not exist; build it with `horse data cache`")
    if not path.is_file():
        raise StaleCacheError(f"{cached_dir} has no {MANIFEST_NAME}: the cache is incomplete (interrupted build?) "
                              "or not a cache; rebuild it with `horse data cache --overwrite`")
    return json.loads(path.read_text())


def check_cache(cached_dir: str | Path, expected: dict | str) -> dict:
    """Return the manifest if the cache matches ``expected`` (an inputs dict from ``cache_inputs`` or a hash);
    else raise ``StaleCacheError`` saying which inputs changed."""
    manifest = read_manifest(cached_dir)
    want = expected if isinstance(expected, str) else inputs_hash(expected)
    if manifest.get("hash") == want:
        return manifest
    if isinstance(expected, str):
        reason = f"hash {manifest.get('hash')} != expected {want}"
    else:
        changes = diff_inputs(manifest.get("inputs", {}), expected)
        reason = "; ".join(changes) if changes else "the stored hash does not match its inputs (edited manifest?)"
    raise StaleCacheError(f"latent cache {cached_dir} is stale: {reason}. Rebuild it with `horse data cache "
                          "--overwrite ...` or point the run at a cache built with these settings")


@dataclass
class CacheReport:
    status: str          # "hit" (already built with the same inputs) or "built"
    manifest: dict
    counters: Counter


def encode_clip(clip, bundle: CodecBundle, dtype: str, cache_hash: str) -> dict:
    video = bundle.encode_video(clip.frames).astype(dtype)
    if clip.audio is None:
        raise ValueError(f"sample {clip.key} has no audio; the cache needs audio for every sample")
    mean, scale = bundle.encode_audio(clip.audio, clip.sample_rate, clip.frames.shape[0])
    text = bundle.encode_text(clip.caption).astype(dtype)
    info = {"caption": clip.caption, "meta": clip.meta, "bucket": list(clip.bucket), "start": clip.start,
            "video_shape": list(video.shape), "audio_shape": list(mean.shape), "text_shape": list(text.shape),
            "cache_hash": cache_hash}
    return {"__key__": clip.key, "video.npy": video, "audio_mean.npy": mean.astype(dtype),
            "audio_scale.npy": scale.astype(dtype), "text.npy": text, "json": info}


_WORKER: dict = {}


def _worker_init(bundle, cfg, dtype, digest) -> None:
    import torch as _torch
    _torch.set_num_threads(1)
    _WORKER.update(bundle=bundle, decoder=SampleDecoder(cfg), dtype=dtype, digest=digest)


def _worker_encode(raw: dict):
    """Decode + encode one raw sample in a pool worker: (encoded or None, counter increments)."""
    decoder = _WORKER["decoder"]
    before = Counter(decoder.counters)
    clip = decoder(raw)
    encoded = None if clip is None else encode_clip(clip, _WORKER["bundle"], _WORKER["dtype"], _WORKER["digest"])
    return encoded, decoder.counters - before


def cache_dataset(source, out_dir: str | Path, bundle: CodecBundle, cfg: ClipConfig, *,
                  latent_dtype: str = "float32", max_count: int = 1000, overwrite: bool = False,
                  progress: Callable[[int], None] | None = None, workers: int = 0) -> CacheReport:
    """Decode and encode every sample of ``source`` (any ``expand_shards`` spec) into ``out_dir``.

    Same inputs as an existing complete cache -> nothing is done ("hit"). A cache with other
    inputs -> ``StaleCacheError`` unless ``overwrite``. Bad samples are skipped and counted.
    ``workers`` > 0 decodes and encodes in that many processes; the output is the same, in the same order.
    """
    urls = expand_shards(source)  # a missing dataset is an error now, before any work
    inputs = cache_inputs(bundle, cfg, latent_dtype)
    digest = inputs_hash(inputs)
    out = Path(out_dir)
    with exclusive_lock(out.parent / f".{out.name}.lock"):  # a second run waits, then finds a hit
        return _build_cache(urls, out, bundle, cfg, inputs, digest, latent_dtype, max_count, overwrite,
                            progress, workers)


def _build_cache(urls, out: Path, bundle, cfg, inputs, digest, latent_dtype, max_count, overwrite, progress,
                 workers) -> CacheReport:
    from .stream import iter_raw_samples

    if (out / MANIFEST_NAME).is_file():
        try:
            return CacheReport("hit", check_cache(out, inputs), Counter())
        except StaleCacheError:
            if not overwrite:
                raise
        (out / MANIFEST_NAME).unlink()
    decoder = SampleDecoder(cfg)

    def encoded():
        if workers > 0:
            import multiprocessing as mp
            # Not "fork": a forked worker inherits the parent's library thread pools without their threads
            # (PyAV's swscale slice threads, after an in-process decode, hang the child's first frame).
            # The forkserver's workers start from a clean process; the bundle is pickled to each.
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers, _worker_init, (bundle, cfg, latent_dtype, digest)) as pool:
                for sample, counts in pool.imap(_worker_encode, iter_raw_samples(urls, decoder.counters),
                                                chunksize=8):
                    decoder.counters.update(counts)
                    if sample is not None:
                        yield sample
                        if progress:
                            progress(decoder.counters["decoded"])
            return
        for raw in iter_raw_samples(urls, decoder.counters):
            clip = decoder(raw)
            if clip is not None:
                yield encode_clip(clip, bundle, latent_dtype, digest)
                if progress:
                    progress(decoder.counters["decoded"])

    shards = write_shards(encoded(), out, prefix=SHARD_PREFIX, max_count=max_count, overwrite=True)
    if not shards:
        raise ValueError(f"no usable sample in {source!r} (skips: {dict(decoder.counters)}); check the clip "
                         "settings (a clip shorter than the smallest --frames / --fps is skipped as too_short)")
    manifest = {"hash": digest, "inputs": inputs, "source": urls, "shards": [p.name for p in shards],
                "num_samples": decoder.counters["decoded"], "counters": dict(decoder.counters)}
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, out / MANIFEST_NAME)
    return CacheReport("built", manifest, decoder.counters)


def to_training_sample(cached: dict, generator: torch.Generator | None = None) -> dict:
    """A decoded cached sample -> ``{"video", "audio", "text"}`` float32 tensors for ``packing.pack``,
    drawing the audio latent from its posterior (``generator`` makes the draw reproducible)."""
    return {"video": torch.as_tensor(cached["video.npy"]).float(),
            "audio": sample_audio_latent(cached["audio_mean.npy"], cached["audio_scale.npy"], generator),
            "text": torch.as_tensor(cached["text.npy"]).float()}


def sample_audio_latent(mean, scale, generator: torch.Generator | None = None) -> torch.Tensor:
    mean, scale = torch.as_tensor(mean).float(), torch.as_tensor(scale).float()
    if not bool(scale.any()):
        return mean
    return mean + scale * torch.randn(mean.shape, generator=generator).to(mean.device)
