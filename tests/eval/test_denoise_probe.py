"""eval.denoise_probe on an untrained demo checkpoint: exact at zero noise, lost at high noise, bad input refused."""

import json
import math

import pytest
import torch

from eval.denoise_probe import main, probe
from horse.pipeline.demo_checkpoint import init_checkpoint
from horse.pipeline.pipeline import Pipeline


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe") / "untrained"
    init_checkpoint(folder, seed=0)
    return folder


def test_zero_noise_is_exact_and_an_untrained_model_loses_the_object(untrained):
    result = probe(Pipeline(untrained), clips=2, sigmas=(0.0, 0.95))
    # at sigma 0 the estimate is the clean latent itself: encode -> decode -> track must be exact
    assert result["sigmas"][0.0]["error_px"] < 1e-6 and result["sigmas"][0.0]["found"] == 1.0
    assert result["static_px"] > 0.5  # shapes-AV objects move
    lost = result["sigmas"][0.95]["error_px"]
    assert lost is None or (math.isfinite(lost) and lost > 1.0)


def test_a_level_does_not_depend_on_the_others_asked(untrained):
    pipeline = Pipeline(untrained)
    alone = probe(pipeline, clips=2, sigmas=(0.5,))["sigmas"][0.5]
    assert probe(pipeline, clips=2, sigmas=(0.9, 0.5))["sigmas"][0.5] == alone


def test_bad_sigmas_are_refused(untrained):
    with pytest.raises(ValueError, match="sigma in"):
        probe(Pipeline(untrained), clips=1, sigmas=(1.5,))


def test_cli_prints_every_level(untrained, capsys):
    assert main([str(untrained), "--clips", "1", "--sigmas", "0,0.5"]) == 0
    out = capsys.readouterr().out
    assert "static baseline" in out and "sigma 0.00" in out and "sigma 0.50" in out
    assert main([str(untrained), "--clips", "1", "--sigmas", "0.5", "--context", "even", "--static", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["context"] == "even" and result["static"] is True


def test_even_context_feeds_clean_even_frames_and_scores_the_odd_ones(untrained, monkeypatch):
    import horse.pipeline.velocity as velocity_module
    from horse.codecs.demo.video import frames_to_video
    from horse.data.shapes import ShapesConfig, make_clip

    seen, make = [], velocity_module.make_velocity_fn

    def recording(model, text):
        inner = make(model, text)

        def velocity(video, audio, sigma, *args):
            seen.append(video.clone())
            return inner(video, audio, sigma, *args)
        return velocity

    monkeypatch.setattr(velocity_module, "make_velocity_fn", recording)
    pipeline = Pipeline(untrained)
    result = probe(pipeline, clips=1, sigmas=(0.9,), context="even", static=True)
    frames, _, _ = make_clip(ShapesConfig(), 0, "test", 0)
    still = pipeline.codecs.video.encode(frames_to_video(frames[:1].repeat(len(frames), axis=0)))
    (video,) = seen
    assert torch.equal(video[:, :, 0::2], still[:, :, 0::2])  # context frames: clean
    assert not torch.allclose(video[:, :, 1::2], still[:, :, 1::2], atol=0.1)  # scored frames: noised
    assert result["static_px"] < 1e-9 and result["context"] == "even" and result["static"]


def test_unknown_context_is_refused(untrained):
    with pytest.raises(ValueError, match="context must be one of"):
        probe(Pipeline(untrained), clips=1, sigmas=(0.5,), context="odd")
