import math

import av
import numpy as np
import pytest
import torch
from PIL import Image

from horse.codecs.demo import DemoVideoCodec, frames_to_video
from horse.diffusion.guidance import video_guidance_scale
from horse.model.packing import pack, unpack
from horse.pipeline import Guidance, Pipeline, make_velocity_fn
from horse.pipeline.media import read_video, retime_indices

FAST = dict(steps=2, sampler="euler")


def _probe(path):
    with av.open(str(path)) as c:
        kinds = [s.type for s in c.streams]
        v, a = c.streams.video[0], c.streams.audio[0]
        info = dict(kinds=kinds, rate=v.average_rate, size=(v.height, v.width), sample_rate=a.sample_rate,
                    video_seconds=float(v.duration * v.time_base), audio_seconds=float(a.duration * a.time_base))
        info["frames"] = sum(1 for _ in c.decode(video=0))
    return info


@pytest.mark.parametrize("duration, fps", [(2, 24), (1, 30)])
def test_mp4_has_one_video_and_one_audio_stream_of_the_right_length(pipeline, tmp_path, duration, fps):
    out = tmp_path / "clip.mp4"
    result = pipeline.generate("a red circle moves left", out, duration=duration, fps=fps, seed=1, **FAST)
    assert result.path == out
    info = _probe(out)
    assert info["kinds"] == ["video", "audio"]
    assert info["rate"] == fps and info["frames"] == duration * fps and info["size"] == (32, 32)
    assert info["video_seconds"] == pytest.approx(duration, abs=1e-6)
    assert info["audio_seconds"] == pytest.approx(duration, abs=1024 / info["sample_rate"])  # one AAC frame
    m = result.metadata
    assert (m["duration"], m["fps"], m["num_frames"], m["mode"], m["seed"]) == (duration, fps, duration * fps,
                                                                                "t2v", 1)
    assert set(m["timings"]) >= {"load", "encode", "sample", "decode", "write"}


def test_retiming_is_sample_and_hold():
    assert retime_indices(8, 8, 24, 24).tolist() == [i // 3 for i in range(24)]
    # frame j at time j/30 shows the native frame k with k/8 <= j/30 < (k+1)/8
    expected = [max(k for k in range(8) if k / 8 <= j / 30 + 1e-12) for j in range(30)]
    assert retime_indices(8, 8, 30, 30).tolist() == expected
    assert retime_indices(8, 8, 8, 8).tolist() == list(range(8))


def test_retimed_frames_repeat_the_native_frames(pipeline):
    r24 = pipeline.generate("a blue square", duration=1, fps=24, seed=5, **FAST)
    r8 = pipeline.generate("a blue square", duration=1, fps=8, seed=5, **FAST)
    assert np.array_equal(r24.frames, np.repeat(r8.frames, 3, axis=0))


def test_same_seed_same_latents_other_seed_differs(pipeline):
    kw = dict(duration=1, fps=8, return_latents=True, steps=2, sampler="distilled")
    a = pipeline.generate("a green disc", seed=7, **kw).latents
    b = pipeline.generate("a green disc", seed=7, **kw).latents
    c = pipeline.generate("a green disc", seed=8, **kw).latents
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    assert not torch.allclose(a["video"], c["video"]) and not torch.allclose(a["audio"], c["audio"])
    assert a["video"].shape == (1, 48, 8, 8, 8) and a["audio"].shape == (1, 33, 64)  # F = 8, Na = 4F + 1


def test_the_checkpoints_frame_correlation_shapes_the_starting_noise(tiny_checkpoint, pipeline, monkeypatch):
    import dataclasses

    from horse.diffusion.flow import correlate_frames
    from horse.pipeline import pipeline as pipeline_module
    from horse.pipeline.pipeline import Pipeline

    config = dataclasses.replace(pipeline.config, video_frame_correlation=0.75)
    correlated = Pipeline.from_parts(config, pipeline.model, tiny_checkpoint)
    starts = []
    original = pipeline_module.initial_noise

    def spy(*args, **kwargs):
        starts.append(original(*args, **kwargs))
        return starts[-1]
    monkeypatch.setattr(pipeline_module, "initial_noise", spy)
    kw = dict(duration=1, fps=8, seed=3, **FAST)
    pipeline.generate("a circle", **kw)
    correlated.generate("a circle", **kw)
    (plain, audio), (corr, corr_audio) = starts
    assert torch.equal(audio, corr_audio) and torch.allclose(corr, correlate_frames(plain, 0.75), atol=1e-6)


def test_unset_seed_is_chosen_and_reported(pipeline):
    m = pipeline.generate("a circle", duration=1, fps=8, **FAST).metadata
    assert isinstance(m["seed"], int) and 0 <= m["seed"] < 2**31


@pytest.mark.parametrize("sigma", [0.9, 0.3])  # before and after the video-guidance switch at t = 500
def test_cfg_as_one_packed_forward_equals_two_forwards(pipeline, sigma):
    model, codecs = pipeline.model, pipeline.codecs
    cond, uncond = codecs.encode_text("a red circle"), codecs.encode_text("blurry, static")
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(1, 48, 2, 4, 4, generator=g), torch.randn(1, 9, 64, generator=g)
    guidance = Guidance(video=4.0, audio=3.0, late_video=1.5, switch_timestep=500)
    v_video, v_audio = make_velocity_fn(model, cond, uncond, guidance)(video, audio, sigma, sigma, 0)

    def separate(text):
        packed = pack([{"video": video[0], "audio": audio[0], "text": text}], model.config.max_in_channels)
        out = unpack(model(**packed.model_inputs()), packed, 64)[0]
        return out["video"][None], out["audio"][None]

    (cv, ca), (uv, ua) = separate(cond), separate(uncond)
    scale = 4.0 if sigma > 0.5 else 1.5
    assert video_guidance_scale(sigma, 4.0, 1.5, 500) == scale
    torch.testing.assert_close(v_video, uv + scale * (cv - uv), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_audio, ua + 3.0 * (ca - ua), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cv, uv)  # the two texts really give different velocities


def test_guidance_of_one_runs_a_single_sample(pipeline):
    calls = []
    handle = pipeline.model.register_forward_hook(lambda m, args, kw, out: calls.append(kw["cu_seqlens"].numel()),
                                                  with_kwargs=True)
    try:
        pipeline.generate("a square", duration=1, fps=8, seed=0, video_guidance=1.0, audio_guidance=1.0,
                          late_video_guidance=None, **FAST)
        pipeline.generate("a square", duration=1, fps=8, seed=0, **FAST)
    finally:
        handle.remove()
    assert calls == [2, 2, 3, 3]  # cu_seqlens: one sample, then cond + uncond in one forward per step


def test_ti2v_overwrites_latent_frame_zero_with_the_image(pipeline, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "first.png")
    kw = dict(duration=1, fps=8, seed=3, return_latents=True, **FAST)
    ti2v = pipeline.generate("a red circle", image=tmp_path / "first.png", **kw)
    t2v = pipeline.generate("a red circle", **kw)
    image_latent = DemoVideoCodec().encode(frames_to_video(pixels[None]))[:, :, 0]
    assert torch.equal(ti2v.latents["video"][:, :, 0], image_latent)
    assert not torch.allclose(t2v.latents["video"][:, :, 0], image_latent)
    assert np.array_equal(ti2v.frames[0], pixels)  # the demo codec is exact, so frame 0 is the image itself
    assert ti2v.metadata["mode"] == "ti2v"


def test_reference_audio_is_held_clean(pipeline, tmp_path):
    from scipy.io import wavfile

    rate = 8000
    t = np.arange(rate) / rate
    wavfile.write(tmp_path / "ref.wav", rate, (0.4 * np.sin(2 * math.pi * 300 * t)).astype(np.float32))
    result = pipeline.generate("a beep", audio=tmp_path / "ref.wav", duration=1, fps=8, seed=0,
                               return_latents=True, **FAST)
    from horse.pipeline.media import read_audio

    expected = pipeline.codecs.encode_audio(*read_audio(tmp_path / "ref.wav"), pipeline.codecs.layout(1, 32, 32))
    assert torch.equal(result.latents["audio"], expected) and result.metadata["reference_audio"]


def test_audio_after_video_resamples_only_the_audio(pipeline, tmp_path):
    kw = dict(duration=1, fps=8, seed=3, return_latents=True, **FAST)
    joint = pipeline.generate("a red circle", **kw)
    fractions = []
    staged = pipeline.generate("a red circle", audio_after_video=True, progress_callback=fractions.append, **kw)
    assert torch.equal(staged.latents["video"], joint.latents["video"])  # the second pass never touches the video
    assert not torch.equal(staged.latents["audio"], joint.latents["audio"])
    assert staged.metadata["audio_after_video"] and not joint.metadata["audio_after_video"]
    assert fractions == pytest.approx([0.25, 0.5, 0.75, 1.0])  # two passes of two steps
    again = pipeline.generate("a red circle", audio_after_video=True, **kw)
    assert torch.equal(again.latents["audio"], staged.latents["audio"])  # seeded like the first pass
    with pytest.raises(ValueError, match="audio_after_video must be true or false"):
        pipeline.generate("a red circle", audio_after_video="yes", **kw)


def test_v2a_keeps_the_given_video_and_generates_its_audio(pipeline, tmp_path):
    source = pipeline.generate("a blue square", tmp_path / "source.mp4", duration=2, fps=24, seed=4, **FAST)
    result = pipeline.generate("a blue square beeps", tmp_path / "dubbed.mp4", video=source.path, seed=9,
                               return_latents=True, **FAST)
    assert result.metadata["mode"] == "v2a" and result.metadata["duration"] == 2.0  # the video's own length
    assert not result.metadata["audio_after_video"]  # the audio pass is the only one
    given = read_video(source.path, 32, 32)[0][::3]  # the 24 fps file's frames at the native 8 fps
    assert torch.equal(result.latents["video"], pipeline.codecs.encode_video(given))
    assert np.array_equal(result.frames, given)  # the demo codec is exact: the output shows the input video
    assert result.audio.shape == (1, 2 * pipeline.codecs.audio.sample_rate) and np.abs(result.audio).max() > 0
    with pytest.raises(ValueError, match="lasts 2.000 s but the clip needs frames up to 2.875 s"):
        pipeline.generate("a beep", video=source.path, duration=3, fps=8, **FAST)
    with pytest.raises(ValueError, match="without an image or reference audio"):
        pipeline.generate("a beep", video=source.path, image=tmp_path / "x.png", **FAST)
    with pytest.raises(FileNotFoundError, match="video .* not found"):
        pipeline.generate("a beep", video=tmp_path / "missing.mp4", **FAST)


def test_motion_strength_needs_a_template(tiny_checkpoint, pipeline, tmp_path):
    result = pipeline.generate("a circle", duration=1, fps=8, seed=0, motion_strength=0.7, **FAST)
    assert result.metadata["text"] == "a circle motion score: 0.7"
    import json
    import shutil

    folder = tmp_path / "no_motion"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "motion_template": None}))
    with pytest.raises(ValueError, match="declares no motion_template"):
        Pipeline(folder).generate("a circle", duration=1, fps=8, motion_strength=0.7, **FAST)


def test_progress_callback_and_text_cache(pipeline):
    fractions = []
    pipeline.generate("a cyan star", duration=1, fps=8, seed=0, steps=3, sampler="euler",
                      progress_callback=fractions.append)
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert pipeline.codecs.encode_text("a cyan star") is pipeline.codecs.encode_text("a cyan star")


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="  "), "prompt is empty"),
    (dict(duration=9), "duration 9.0 s is outside"),
    (dict(fps=25), "fps 25 is not offered"),
    (dict(resolution="64x64"), "resolution '64x64' is not offered"),
    (dict(steps=0), "steps must be"),
    (dict(sampler="ddim"), "sampler name"),
    (dict(motion_strength=2.0), "within \\[0, 1\\]"),
])
def test_bad_inputs_raise_clear_errors(pipeline, kwargs, message):
    args = dict(prompt="a circle", duration=1, fps=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipeline.generate(args.pop("prompt"), **args)


def test_clip_layouts_follow_the_codec_specs():
    from types import SimpleNamespace

    from horse.codecs.demo import DemoAudioCodec
    from horse.pipeline.codecs import CodecBundle

    demo = CodecBundle("demo", DemoVideoCodec(), DemoAudioCodec(), None, 8)
    lay = demo.layout(2, 32, 64)
    assert (lay.num_frames, lay.video_latent, lay.num_audio, lay.duration) == (16, (48, 16, 8, 16), 65, 2.0)
    # The release (spec 4.3, 4.7): 4 s -> 101 pixel frames, T = 26; 5 s -> Na = 126, T = 32.
    wan = SimpleNamespace(spatial_stride=16, latent_channels=48)
    release = CodecBundle("release", wan, SimpleNamespace(latent_channels=64), None, 25)
    lay4, lay5 = release.layout(4, 256, 448), release.layout(5, 256, 448)
    assert (lay4.num_frames, lay4.video_latent, lay4.num_audio) == (101, (48, 26, 16, 28), 101)
    assert (lay5.video_latent[1], lay5.num_audio, lay5.duration) == (32, 126, 5.0)
    with pytest.raises(ValueError, match="multiple of 16"):
        release.layout(4, 250, 448)


def test_a_temporally_patched_model_generates_and_checks_the_duration(tmp_path):
    """video_patch (2, 2, 2): tokens of two latent frames; generation works end to end, and a duration whose
    latent frames do not fill whole tokens, or a model whose video input does not match, is refused clearly."""
    from horse.pipeline import init_checkpoint
    model = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0],
             "video_patch": [2, 2, 2], "video_in_channels": 48 * 8}
    patched = Pipeline(init_checkpoint(tmp_path / "tp2", seed=0, model=model))
    assert patched.model.config.video_patch == (2, 2, 2)
    result = patched.generate("a red circle moves left", tmp_path / "clip.mp4", duration=2, fps=8, seed=0,
                              return_latents=True, **FAST)
    assert result.latents["video"].shape[-3:] == (16, 8, 8) and _probe(tmp_path / "clip.mp4")["frames"] == 16
    with pytest.raises(ValueError, match="multiple of 2"):
        patched.generate("a red circle moves left", duration=1.125, fps=8, seed=0, **FAST)
    bad = init_checkpoint(tmp_path / "bad", seed=0, model={**model, "video_in_channels": 192})
    with pytest.raises(ValueError, match="video_in_channels to 384"):
        Pipeline(bad)


def test_a_model_with_context_frames_generates(tmp_path):
    """video_context_frames 1: each token reads its neighbours' patches; sampling packs them the same way."""
    from horse.pipeline import init_checkpoint
    model = {"preset": "demo", "num_layers": 2, "mm_layers": [0, 1], "gelu7_layers": [0],
             "video_context_frames": 1, "video_in_channels": 192 * 3}
    pipe = Pipeline(init_checkpoint(tmp_path / "ctx", seed=0, model=model))
    result = pipe.generate("a red circle moves left", duration=1, fps=8, seed=0, return_latents=True, **FAST)
    assert result.latents["video"].shape[-4:] == (48, 8, 8, 8) and torch.isfinite(result.latents["video"]).all()
