"""The clip-length curriculum: prefix crops keep audio and video aligned; stages select frames by step."""

import pytest
import torch

from horse.model.packing import AUDIO, VIDEO, pack
from horse.model.rope import rope_positions
from horse.training.curriculum import PrefixStage, crop_prefix, parse_stages, prefix_frames_at


def demo_sample(frames=16):
    """A sample shaped like the demo codecs' latents: video [48, T, 8, 8], 4T + 1 audio posteriors."""
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(48, frames, 8, 8, generator=g),
            "audio_mean": torch.randn(4 * frames + 1, 64, generator=g),
            "audio_scale": torch.rand(4 * frames + 1, 64, generator=g),
            "text": torch.randn(25, 128, generator=g)}


def test_prefix_keeps_leading_frames_and_their_audio():
    s = demo_sample()
    out = crop_prefix(s, 4)
    assert out["video"].shape == (48, 4, 8, 8) and torch.equal(out["video"], s["video"][:, :4])
    for key in ("audio_mean", "audio_scale"):
        assert out[key].shape == (17, 64) and torch.equal(out[key], s[key][:17])
    assert out["text"] is s["text"]
    assert s["video"].shape[1] == 16  # the stored sample is untouched


def test_prefix_tokens_sit_where_they_sat_in_the_whole_clip():
    """Same RoPE coordinates for every kept video and audio token: the prefix is the clip's start, not a squeeze."""
    s = demo_sample()
    whole, cut = (pack([{"video": x["video"], "audio": x["audio_mean"], "text": x["text"]}], 192)
                  for x in (s, crop_prefix(s, 4)))
    for mod, n in ((VIDEO, 4 * 16), (AUDIO, 17)):
        kept, full = (rope_positions(b.coords[b.modality == mod]) for b in (cut, whole))
        assert kept.shape[0] == n and torch.equal(kept, full[:n])


def test_short_clips_are_unchanged_and_misaligned_audio_is_refused():
    s = demo_sample(frames=4)
    assert crop_prefix(s, 8) is s
    bad = {**demo_sample(), "audio_mean": torch.zeros(60, 64)}
    with pytest.raises(ValueError, match="whole number per latent frame"):
        crop_prefix(bad, 4)


def test_stages_pick_frames_by_step():
    stages = parse_stages([{"frames": 4, "until_step": 10}, {"frames": 8, "until_step": 20}])
    assert stages == (PrefixStage(4, 10), PrefixStage(8, 20))
    assert [prefix_frames_at(stages, k) for k in (0, 9, 10, 19, 20, 1000)] == [4, 4, 8, 8, None, None]
    assert prefix_frames_at(parse_stages([]), 0) is None


@pytest.mark.parametrize("stages", [[{"frames": 4, "until_step": 20}, {"frames": 8, "until_step": 10}],
                                    [{"frames": 0, "until_step": 10}]])
def test_bad_stages_are_refused(stages):
    with pytest.raises(ValueError, match="prefix stage"):
        parse_stages(stages)
