"""Patchify orders (spec 4.2), coords (spec 4.5) and multi-sample pack/unpack (spec 4.6)."""

import pytest
import torch

from horse.model import AUDIO, TEXT, VIDEO
from horse.model.packing import (
    audio_coords,
    pack,
    patchify_video,
    text_coords,
    unpack,
    unpatchify_video,
    video_coords,
)
from horse.model.rope import ElementWiseFourierEmbed

C, T, H, W = 3, 2, 4, 6  # latent; token grid (2, 2, 3)


@pytest.mark.parametrize("order", ["in", "out"])
def test_patchify_round_trip(order):
    latent = torch.randn(C, T, H, W, generator=torch.Generator().manual_seed(0))
    tokens = patchify_video(latent, order)
    assert tokens.shape == (T * (H // 2) * (W // 2), C * 4)
    assert torch.equal(unpatchify_video(tokens, (T, H // 2, W // 2), order), latent)


def test_patch_order_asymmetry():
    for c in range(C):
        for ph in range(2):
            for pw in range(2):
                t, i, j = 1, 1, 2  # token (t, i, j) of the (T, H/2, W/2) grid, t-major then h then w
                latent = torch.zeros(C, T, H, W)
                latent[c, t, 2 * i + ph, 2 * j + pw] = 1
                row = t * (H // 2) * (W // 2) + i * (W // 2) + j
                for order, col in (("in", c * 4 + ph * 2 + pw), ("out", (ph * 2 + pw) * C + c)):
                    expected = torch.zeros(T * (H // 2) * (W // 2), C * 4)
                    expected[row, col] = 1
                    assert torch.equal(patchify_video(latent, order), expected), (order, c, ph, pw)
    # the two orders differ for any C > 1: reading the output with the input order scrambles channels
    latent = torch.randn(C, T, H, W, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(unpatchify_video(patchify_video(latent, "out"), (T, H // 2, W // 2), "in"), latent)


def test_patchify_rejects_bad_shapes():
    with pytest.raises(ValueError):
        patchify_video(torch.zeros(C, T, 3, W))
    with pytest.raises(ValueError):
        patchify_video(torch.zeros(C, T, H, W), order="sideways")


def test_video_coords():
    grid = (2, 3, 4)
    coords = video_coords(grid)
    expected = [[t, h, w, *grid, *grid] for t in range(2) for h in range(3) for w in range(4)]
    assert torch.equal(coords, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("style,na,frames,ref", [("v2", 9, 3, 3), ("v2", 13, 4, 4), ("v2", 10, 3, 3),
                                                  ("v1", 9, 3, 3), ("v1", 9, 5, 5)])
def test_audio_coords(style, na, frames, ref):
    # v2: ref = (Na-1)//4 + 1 (audio frame k at latent time ~k/4); v1: ref = the latent video frames
    coords = audio_coords(na, frames, style)
    expected = [[k, 0, 0, na, 1, 1, ref, 1, 1] for k in range(na)]
    assert torch.equal(coords, torch.tensor(expected, dtype=torch.float32))


def test_text_coords_v2_all_angles_zero():
    nt = 5
    coords = text_coords(nt, "v2")
    expected = [[k - nt, 0, 0, nt, 1, 1, 1, 1, 1] for k in range(nt)]
    assert torch.equal(coords, torch.tensor(expected, dtype=torch.float32))
    emb = ElementWiseFourierEmbed(32)(coords)
    assert torch.equal(emb[:, :12], torch.zeros(nt, 12))


def test_text_coords_v1_including_a_single_token():
    coords = text_coords(4, "v1")
    assert torch.equal(coords, torch.tensor([[k, 0, 0, 4, 1, 1, 2, 1, 1] for k in range(4)], dtype=torch.float32))
    # t-scale (2-1)/(4-1): text t spread over [0, 1]
    emb = ElementWiseFourierEmbed(8)(coords)  # 1 band per axis, band 0 = 1
    torch.testing.assert_close(torch.asin(emb[:, 0]), torch.tensor([0, 1 / 3, 2 / 3, 1.0]))
    one = text_coords(1, "v1")  # the release divides by zero here; horse must not
    emb = ElementWiseFourierEmbed(8)(one)
    assert torch.isfinite(emb).all() and torch.equal(emb[:, :3], torch.zeros(1, 3))


def test_single_text_token_v1_through_the_model(tiny_config, random_model, make_pack):
    cfg = tiny_config()
    packed, _ = make_pack(cfg, [dict(frames=2, h=2, w=2, audio=3, text=1)], coords_style="v1")
    out = random_model(cfg)(**packed.model_inputs())
    assert torch.isfinite(out).all()


def test_pack_layout_and_unpack_round_trip(tiny_config):
    cfg = tiny_config()
    width = cfg.max_in_channels
    g = torch.Generator().manual_seed(0)
    samples = [
        {"video": torch.randn(3, 2, 4, 6, generator=g), "audio": torch.randn(5, 5, generator=g),
         "text": torch.randn(3, 7, generator=g)},
        {"video": torch.randn(3, 1, 2, 2, generator=g), "text": torch.randn(2, 7, generator=g)},
        {"audio": torch.randn(4, 5, generator=g), "text": torch.randn(6, 7, generator=g)},
    ]
    packed = pack(samples, width, "v2")
    lengths = [12 + 5 + 3, 1 + 2, 4 + 6]
    assert packed.cu_seqlens.tolist() == [0, 20, 23, 33]
    assert packed.x.shape == (sum(lengths), width)
    mods = [VIDEO] * 12 + [AUDIO] * 5 + [TEXT] * 3 + [VIDEO] + [TEXT] * 2 + [AUDIO] * 4 + [TEXT] * 6
    assert packed.modality.tolist() == mods
    # rows: input-order patches, then audio, then text, each zero-padded to the pack width
    assert torch.equal(packed.x[:12, :12], patchify_video(samples[0]["video"], "in"))
    assert torch.equal(packed.x[12:17, :5], samples[0]["audio"])
    assert torch.equal(packed.x[17:20, :7], samples[0]["text"])
    assert torch.equal(packed.x[12:17, 5:], torch.zeros(5, width - 5))
    assert torch.equal(packed.x[23:27, :5], samples[2]["audio"])
    assert torch.equal(packed.coords[:12], video_coords((2, 2, 3)))
    assert torch.equal(packed.coords[12:17], audio_coords(5, 2, "v2"))
    assert torch.equal(packed.coords[27:33], text_coords(6, "v2"))
    # a fake model output in the output (channel-minor) order unpacks to the targets
    targets = [{"video": torch.randn(3, 2, 4, 6, generator=g), "audio": torch.randn(5, 5, generator=g)},
               {"video": torch.randn(3, 1, 2, 2, generator=g)},
               {"audio": torch.randn(4, 5, generator=g)}]
    out = torch.zeros(sum(lengths), cfg.out_channels)
    out[:12] = patchify_video(targets[0]["video"], "out")
    out[12:17, :5] = targets[0]["audio"]
    out[20:21] = patchify_video(targets[1]["video"], "out")
    out[23:27, :5] = targets[2]["audio"]
    result = unpack(out, packed, audio_channels=5)
    assert [sorted(r) for r in result] == [["audio", "video"], ["video"], ["audio"]]
    for got, want in zip(result, targets):
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_pack_errors(tiny_config):
    with pytest.raises(ValueError, match="coords_style"):
        pack([{"text": torch.zeros(2, 7)}], 12, "v3")
    with pytest.raises(ValueError, match="unknown"):
        pack([{"image": torch.zeros(2, 7)}], 12)
    with pytest.raises(ValueError, match="width"):
        pack([{"text": torch.zeros(2, 20)}], 12)
    with pytest.raises(ValueError):
        pack([], 12)


def test_model_output_layout(tiny_config, random_model, make_pack):
    """spec 3.1: video rows carry video_in values, audio rows audio_in values then zeros, text rows zeros."""
    cfg = tiny_config()
    packed, _ = make_pack(cfg, [dict(frames=2, h=2, w=4, audio=3, text=2), dict(frames=1, h=2, w=2, audio=2, text=3)])
    out = random_model(cfg)(**packed.model_inputs())
    assert out.shape == (packed.num_tokens, cfg.out_channels) and out.dtype == torch.float32
    video, audio, text = (packed.modality == m for m in (VIDEO, AUDIO, TEXT))
    assert (out[video].abs() > 0).all()
    assert (out[audio][:, :cfg.audio_in_channels].abs() > 0).all()
    assert torch.equal(out[audio][:, cfg.audio_in_channels:], torch.zeros(int(audio.sum()), 12 - 5))
    assert torch.equal(out[text], torch.zeros(int(text.sum()), cfg.out_channels))


def test_model_input_errors(tiny_config, random_model, make_pack):
    cfg = tiny_config()
    model = random_model(cfg)
    packed, _ = make_pack(cfg, [dict(frames=1, h=2, w=2, audio=2, text=2)] * 2)
    x, coords, modality = packed.x, packed.coords, packed.modality
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(x, coords, modality, cu_seqlens=torch.tensor([0, 3, 4]))
    with pytest.raises(ValueError, match="agree"):
        model(x[:-1], coords, modality)
    with pytest.raises(ValueError, match="columns"):
        model(x[:, :6], coords, modality)
    with pytest.raises(ValueError, match="modality"):
        model(x, coords, modality + 1)
    # narrower x is fine when no present modality needs the missing columns (video 12, audio 5: no text)
    no_text = modality != TEXT
    out = model(x[no_text][:, :12], coords[no_text], modality[no_text])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("pt", [2, 4])
def test_temporal_patch_round_trip_and_token_times(tiny_config, pt):
    """A video_patch of pt frames: tokens hold pt frames, unpack inverts pack, and each token's RoPE time is
    the mean of its frames, in latent frames (where v2 audio coords put the audio: token k at ~k/4)."""
    from horse.model.rope import rope_positions
    patch = (pt, 2, 2)
    cfg = tiny_config(video_in_channels=C * pt * 4, video_patch=patch)
    g = torch.Generator().manual_seed(0)
    frames = 2 * pt
    video = torch.randn(C, frames, 4, 6, generator=g)
    samples = [{"video": video, "audio": torch.randn(4 * frames + 1, 5, generator=g), "text": torch.randn(3, 7, generator=g)}]
    packed = pack(samples, cfg.max_in_channels, "v2", patch)
    nv = 2 * 2 * 3
    assert packed.patch == patch and packed.layouts[0].video_grid == (2, 2, 3)
    assert torch.equal(packed.x[:nv, :C * pt * 4], patchify_video(video, "in", patch))
    pos = rope_positions(packed.coords)
    token_times = pos[:nv:6, 0]  # one row per temporal token
    assert torch.allclose(token_times, torch.tensor([(pt - 1) / 2, pt + (pt - 1) / 2]))
    audio_times = pos[nv:nv + 4 * frames + 1, 0]
    assert torch.allclose(audio_times, torch.arange(4 * frames + 1) / 4)  # frame j's audio starts at time j
    target = torch.randn(C, frames, 4, 6, generator=g)
    out = torch.zeros(packed.num_tokens, cfg.out_channels)
    out[:nv] = patchify_video(target, "out", patch)
    assert torch.equal(unpack(out, packed, audio_channels=5)[0]["video"], target)
    # one temporal token: placed at its frames' mean time directly
    single = pack([{"video": video[:, :pt]}], cfg.max_in_channels, "v2", patch)
    assert torch.allclose(rope_positions(single.coords)[:, 0], torch.full((6,), (pt - 1) / 2))


def test_temporal_patch_errors(tiny_config):
    from horse.model.packing import check_video_width
    with pytest.raises(ValueError, match="multiples of the patch"):
        pack([{"video": torch.zeros(C, 3, 4, 4)}], 48, "v2", (2, 2, 2))
    with pytest.raises(ValueError, match="video_in_channels to 24"):
        check_video_width(C, (2, 2, 2), 12)
    with pytest.raises(ValueError, match="video_patch"):
        tiny_config(video_patch=(0, 2, 2))
    assert tiny_config(video_patch=[2, 2, 2]).video_patch == (2, 2, 2)


@pytest.mark.parametrize("patch", [(1, 2, 2), (4, 2, 2)])
def test_benchmark_pack_has_the_token_counts_it_reports(tiny_config, patch):
    from horse.bench.model import build_pack
    cfg = tiny_config(video_in_channels=3 * patch[0] * 4, video_patch=patch)
    packed, counts = build_pack(cfg, tokens=200, samples=2, frames=2, text=3, generator=torch.Generator().manual_seed(0))
    assert packed.num_tokens == sum(sum(c) for c in counts)
    assert [lay.num_video for lay in packed.layouts] == [c[0] for c in counts]


@pytest.mark.parametrize("pt", [1, 2])
def test_context_frames_join_the_input_and_not_the_output(tiny_config, pt):
    """video_context_frames k: a token's input row is [patch k tokens earlier, ..., own, ..., k later] (zeros past
    the clip's ends); the model's video output is one patch wide and unpacks to the latent's shape."""
    from horse.model import DiTModel
    from horse.model.packing import pack_for_model, video_input_tokens
    patch = (pt, 2, 2)
    cfg = tiny_config(video_in_channels=3 * pt * 4 * 3, video_patch=patch, video_context_frames=1)
    assert cfg.video_out_channels == 3 * pt * 4 and cfg.out_channels == 12 * pt
    latent = torch.randn(C, 3 * pt, 4, 4, generator=torch.Generator().manual_seed(0))
    rows = video_input_tokens(latent, patch, 1)
    per_frame = 4  # tokens per token-frame (2 x 2 grid)
    own = patchify_video(latent, "in", patch)
    w = own.shape[1]
    assert rows.shape == (3 * per_frame, 3 * w)
    assert torch.equal(rows[:, w:2 * w], own)
    assert torch.equal(rows[per_frame:, :w], own[:-per_frame]) and torch.equal(rows[:per_frame, :w], torch.zeros(per_frame, w))
    assert torch.equal(rows[:-per_frame, 2 * w:], own[per_frame:]) and torch.equal(rows[-per_frame:, 2 * w:], torch.zeros(per_frame, w))
    sample = {"video": latent, "audio": torch.randn(5, 5), "text": torch.randn(2, 7)}
    packed = pack_for_model([sample], cfg)
    out = DiTModel(cfg)(**packed.model_inputs())
    assert out.shape == (packed.num_tokens, cfg.out_channels)
    assert unpack(out, packed, audio_channels=5)[0]["video"].shape == latent.shape
    with pytest.raises(ValueError, match=f"video_in_channels to {cfg.video_in_channels}"):
        pack_for_model([sample], cfg.replace(video_in_channels=2 * cfg.video_in_channels))
    with pytest.raises(ValueError, match="multiple of 2k\\+1"):
        tiny_config(video_in_channels=16, video_context_frames=1)
