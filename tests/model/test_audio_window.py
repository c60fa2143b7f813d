"""DiTConfig.audio_attn_layers: audio tokens see only the video frames near their own time."""

import pytest
import torch

from horse.model import DiTModel
from horse.model.attention import window_ranges
from horse.model.packing import audio_coords, audio_token_frames


def test_window_ranges_pair_each_audio_run_with_its_frames():
    # 3 frames of 2 video tokens, 4 audio tokens at frames 0, 0, 1, 3 (past the end: the last frame), 2 text
    q, k = window_ranges(6, 3, 12, 10, audio_frames=[0, 0, 1, 3], audio_window=0)
    assert list(zip(q, k)) == [
        ((10, 16), (10, 22)),                      # video sees everything
        ((16, 18), (10, 12)), ((16, 18), (16, 22)),  # audio at frame 0: frame 0, all audio and text
        ((18, 19), (12, 14)), ((18, 19), (16, 22)),
        ((19, 20), (14, 16)), ((19, 20), (16, 22)),
        ((20, 22), (10, 22)),                      # text sees everything
    ]
    q, k = window_ranges(6, 3, 12, 0, audio_frames=[1, 1, 1, 1], audio_window=1)
    assert ((6, 10), (0, 6)) in list(zip(q, k))  # frames 0..2 around frame 1


def test_audio_token_frames_follow_the_rope_time():
    assert audio_token_frames(audio_coords(9, 2)) == [0, 0, 0, 0, 1, 1, 1, 1, 2]  # token k at k/4 frames
    assert audio_token_frames(audio_coords(17, 4), frames_per_token=2) == [0] * 8 + [1] * 8 + [2]


@pytest.mark.parametrize("window", [0, 1])
def test_an_audio_token_reads_only_the_frames_in_its_window(tiny_config, make_pack, window):
    """One layer: an audio token's output depends on the video frames within the window of its time only."""
    cfg = tiny_config(num_layers=1, mm_layers=(0,), gelu7_layers=(0,), audio_attn_layers=(0,),
                      audio_frame_window=window)
    model = DiTModel(cfg)
    packed, _ = make_pack(cfg, [dict(frames=4, h=4, w=4, audio=17, text=3)])  # 2x2 tokens per frame
    inputs = packed.model_inputs()
    audio_rows = torch.nonzero(inputs["modality"] == 1).flatten()
    frames = torch.tensor(audio_token_frames(inputs["coords"][audio_rows]))
    with torch.no_grad():
        before = model(**inputs)[audio_rows]
        changed = dict(inputs, x=inputs["x"].clone())
        changed["x"][12:16] += 3.0  # video frame 3 (4 tokens per frame)
        after = model(**changed)[audio_rows]
    moved = (after - before).abs().amax(1) > 1e-6
    near = (frames.clamp(max=3) - 3).abs() <= window
    assert torch.equal(moved, near) and near.any() and (~near).any()


def test_the_release_layout_is_unchanged_and_tread_is_refused(tiny_config, make_pack, randomize):
    cfg = tiny_config(audio_attn_layers=(1,), audio_frame_window=0)
    model, release = randomize(DiTModel(cfg)), DiTModel(tiny_config())
    assert set(model.state_dict()) == set(release.state_dict())  # no new weights
    release.load_state_dict(model.state_dict())
    packed, _ = make_pack(cfg, [dict(frames=4, h=4, w=4, audio=17, text=3)])
    with torch.no_grad():
        assert not torch.allclose(model(**packed.model_inputs()), release(**packed.model_inputs()))
    from horse.model.dit import TokenRouting
    keep = torch.ones(packed.model_inputs()["x"].shape[0], dtype=torch.bool)
    with pytest.raises(ValueError, match="audio-window"):
        model(**packed.model_inputs(), routing=TokenRouting(0, 1, keep))
    with pytest.raises(ValueError, match="audio_frame_window must be >= 0"):
        tiny_config(audio_frame_window=-1)
    assert tiny_config(audio_attn_layers="all").audio_attn_layers == (0, 1, 2)  # every layer of the 3
    with pytest.raises(ValueError, match="layer indices or 'all'"):
        tiny_config(audio_attn_layers="some")
