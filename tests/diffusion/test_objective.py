import math

import pytest
import torch

from horse.diffusion.flow import x0_from_velocity
from horse.diffusion.loss import (
    LossConfig,
    combine_loss_terms,
    count_loss_tokens,
    flow_loss_terms,
    flow_matching_loss,
)
from horse.diffusion.objective import (
    NoiseConfig,
    drop_captions,
    leading_frames_mask,
    prepare_flow_inputs,
    sample_modality_sigmas,
    sample_sigmas,
)

N = 20000


def test_shifted_uniform_statistics():
    g = torch.Generator().manual_seed(0)
    plain = sample_sigmas(NoiseConfig(shift=1.0), N, g)
    assert abs(plain.mean().item() - 0.5) < 0.01 and abs(plain.var().item() - 1 / 12) < 0.005
    shifted = sample_sigmas(NoiseConfig(), N, g)
    # E[5u / (1 + 4u)] for u ~ U(0, 1) = 5/4 * (1 - ln(5) / 4); median = 5 * 0.5 / 3
    assert abs(shifted.mean().item() - 1.25 * (1 - math.log(5) / 4)) < 0.01
    assert abs(shifted.median().item() - 2.5 / 3) < 0.01
    assert shifted.min() >= 0 and shifted.max() <= 1


def test_logit_normal_statistics():
    g = torch.Generator().manual_seed(1)
    cfg = NoiseConfig(distribution="logit_normal", logit_mean=0.5, logit_std=0.8, shift=1.0)
    logits = torch.logit(sample_sigmas(cfg, N, g).double())
    assert abs(logits.mean().item() - 0.5) < 0.03 and abs(logits.std().item() - 0.8) < 0.03
    with pytest.raises(ValueError):
        NoiseConfig(distribution="beta")


def test_shared_versus_independent_levels():
    v, a = sample_modality_sigmas(NoiseConfig(shared_across_modalities=True), 8, torch.Generator().manual_seed(2))
    assert torch.equal(v, a)
    v, a = sample_modality_sigmas(NoiseConfig(), 8, torch.Generator().manual_seed(2))
    assert not torch.equal(v, a)


def test_audio_shift_gives_audio_its_own_law():
    cfg = NoiseConfig(distribution="logit_normal", shift=3.0, audio_shift=1.0)
    v, a = sample_modality_sigmas(cfg, N, torch.Generator().manual_seed(5))
    # median of shift*u/(1+(shift-1)u) at u = 0.5 is shift/(shift+1): 0.75 for video, 0.5 for audio
    assert abs(v.median().item() - 0.75) < 0.01 and abs(a.median().item() - 0.5) < 0.01
    # the audio draw is the same random stream as without audio_shift, only mapped by its own shift
    v_same, a_same = sample_modality_sigmas(NoiseConfig(distribution="logit_normal", shift=3.0), N,
                                            torch.Generator().manual_seed(5))
    assert torch.equal(v, v_same) and torch.allclose(a_same, 3 * a / (1 + 2 * a), atol=1e-6)
    with pytest.raises(ValueError, match="audio_shift"):
        NoiseConfig(shift=3.0, audio_shift=1.0, shared_across_modalities=True)
    with pytest.raises(ValueError, match="audio_shift"):
        NoiseConfig(audio_shift=0.0)


def test_uniform_fraction_mixes_in_every_level():
    base = NoiseConfig(distribution="logit_normal", shift=6.0)
    mixed = NoiseConfig(distribution="logit_normal", shift=6.0, uniform_fraction=0.25)
    plain = sample_sigmas(base, N, torch.Generator().manual_seed(6))
    mix = sample_sigmas(mixed, N, torch.Generator().manual_seed(6))
    # the main law puts ~0.1% of levels below 0.2; a quarter drawn from U(0, 1) adds 0.25 * 0.2 = 5%
    assert (plain < 0.2).float().mean() < 0.005
    assert abs((mix < 0.2).float().mean().item() - 0.05) < 0.006
    kept = mix == plain  # the other three quarters are the main law's own draws, unchanged
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    with pytest.raises(ValueError, match="uniform_fraction"):
        NoiseConfig(uniform_fraction=1.5)


def test_prepare_inputs_draw_order_and_clean_tokens():
    g = torch.Generator().manual_seed(3)
    video0, audio0 = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 6, 5, generator=g)
    video_clean = leading_frames_mask(torch.tensor([True, False]), 4)
    audio_clean = torch.zeros(2, 6, dtype=torch.bool)
    audio_clean[1] = True  # sample 1 has clean reference audio
    cfg = NoiseConfig()
    inputs = prepare_flow_inputs(
        video0, audio0, cfg, torch.Generator().manual_seed(4), video_clean=video_clean, audio_clean=audio_clean
    )
    ref = torch.Generator().manual_seed(4)
    sv, sa = sample_sigmas(cfg, 2, ref), sample_sigmas(cfg, 2, ref)
    ev, ea = torch.randn(video0.shape, generator=ref), torch.randn(audio0.shape, generator=ref)
    assert torch.equal(inputs.sigma_video, sv) and torch.equal(inputs.sigma_audio, sa)
    assert torch.allclose(inputs.video_target, ev - video0) and torch.allclose(inputs.audio_target, ea - audio0)
    expected_v = (1 - sv.view(2, 1, 1, 1, 1)) * video0 + sv.view(2, 1, 1, 1, 1) * ev
    assert torch.equal(inputs.video[0, :, :1], video0[0, :, :1])  # clean TI2V frame
    assert torch.allclose(inputs.video[0, :, 1:], expected_v[0, :, 1:])
    assert torch.allclose(inputs.video[1], expected_v[1])
    assert torch.equal(inputs.audio[1], audio0[1])
    assert torch.allclose(inputs.audio[0], (1 - sa[0]) * audio0[0] + sa[0] * ea[0])
    with pytest.raises(ValueError):
        prepare_flow_inputs(video0, audio0, cfg, g, video_clean=torch.zeros(2, 3, dtype=torch.bool))


def test_frame_levels_give_a_share_of_clips_one_level_per_frame():
    g = torch.Generator().manual_seed(8)
    video0, audio0 = torch.randn(400, 3, 6, 2, 2, generator=g), torch.randn(400, 5, 4, generator=g)
    base = NoiseConfig(distribution="logit_normal", shift=3.0)
    framed = NoiseConfig(distribution="logit_normal", shift=3.0, frame_level_fraction=0.25)
    plain = prepare_flow_inputs(video0, audio0, base, torch.Generator().manual_seed(9))
    mixed = prepare_flow_inputs(video0, audio0, framed, torch.Generator().manual_seed(9))
    # the clip levels, audio levels and noise come first, so they are the fraction-0 run's draws
    assert torch.equal(mixed.sigma_audio, plain.sigma_audio) and torch.equal(mixed.video_target, plain.video_target)
    assert mixed.sigma_video.shape == (400, 1, 6, 1, 1) and plain.sigma_video.shape == (400,)
    levels = mixed.sigma_video.flatten(1)
    varies = levels.std(dim=1) > 0
    assert abs(varies.float().mean().item() - 0.25) < 0.07
    assert torch.equal(levels[~varies], plain.sigma_video[~varies, None].expand(-1, 6))
    # per-frame levels follow the same law (median of logit-normal shift 3 is 0.75) and noise their own frame
    assert abs(levels[varies].median().item() - 0.75) < 0.05
    eps = plain.video_target + video0
    s = mixed.sigma_video
    assert torch.allclose(mixed.video, (1 - s) * video0 + s * eps, atol=1e-6)
    assert torch.allclose(x0_from_velocity(mixed.video, mixed.sigma_video, mixed.video_target), video0, atol=1e-5)
    with pytest.raises(ValueError, match="frame_level_fraction"):
        NoiseConfig(frame_level_fraction=-0.1)


def test_masked_tokens_get_no_loss_or_gradient():
    g = torch.Generator().manual_seed(5)
    video0, audio0 = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 6, 5, generator=g)
    video_clean = leading_frames_mask(torch.tensor([True, True]), 4)
    inputs = prepare_flow_inputs(video0, audio0, NoiseConfig(), g, video_clean=video_clean)
    v_video = torch.randn(video0.shape, generator=g, requires_grad=True)
    v_audio = torch.randn(audio0.shape, generator=g, requires_grad=True)
    loss, means = flow_matching_loss(v_video, v_audio, inputs)
    loss.backward()
    assert v_video.grad[:, :, 0].abs().max() == 0 and v_video.grad[:, :, 1:].abs().min() > 0
    per_token = (v_video - inputs.video_target).square().mean(dim=1)[:, 1:]
    assert torch.allclose(means["video"], per_token.mean())
    assert torch.allclose(means["audio"], (v_audio - inputs.audio_target).square().mean())
    assert torch.allclose(loss, means["video"] + means["audio"])
    assert count_loss_tokens(video0, 1, video_clean).item() == 2 * 3 * 2 * 2
    # a fully clean modality contributes nothing
    terms = flow_loss_terms(v_audio, inputs.audio_target, 2, torch.ones(2, 6, dtype=torch.bool))
    assert terms.count.item() == 0 and combine_loss_terms({"audio": terms}).item() == 0


def test_token_weighted_mean_is_exact_across_unequal_micro_batches():
    g = torch.Generator().manual_seed(6)
    cfg = LossConfig(video_weight=1.0, audio_weight=0.5)
    batches = []
    for b, t, na in ((1, 3, 4), (3, 5, 9)):  # unequal token counts
        pv, tv = torch.randn(b, 2, t, 2, 2, generator=g), torch.randn(b, 2, t, 2, 2, generator=g)
        pa, ta = torch.randn(b, na, 3, generator=g), torch.randn(b, na, 3, generator=g)
        clean = torch.rand(b, t, 1, 1, generator=g) < 0.3
        batches.append((pv.requires_grad_(), tv, clean, pa.requires_grad_(), ta))
    # global reference: mean over all supervised video tokens, mean over all audio tokens
    v_err = torch.cat([((pv - tv).square().mean(1))[~c.expand(-1, -1, 2, 2)] for pv, tv, c, _, _ in batches])
    a_err = torch.cat([(pa - ta).square().mean(-1).flatten() for _, _, _, pa, ta in batches])
    reference = v_err.mean() + 0.5 * a_err.mean()
    ref_grads = torch.autograd.grad(reference, [batches[0][0], batches[1][3]])

    totals = {
        "video": sum(count_loss_tokens(tv, 1, c) for _, tv, c, _, _ in batches),
        "audio": sum(count_loss_tokens(ta, 2) for _, _, _, _, ta in batches),
    }
    total_loss = 0.0
    grads = [torch.zeros_like(batches[0][0]), torch.zeros_like(batches[1][3])]
    for k, (pv, tv, c, pa, ta) in enumerate(batches):
        terms = {"video": flow_loss_terms(pv, tv, 1, c), "audio": flow_loss_terms(pa, ta, 2)}
        part = combine_loss_terms(terms, cfg, totals)
        total_loss = total_loss + part.detach()
        g_v, g_a = torch.autograd.grad(part, [pv, pa])
        if k == 0:
            grads[0] += g_v
        else:
            grads[1] += g_a
    assert torch.allclose(total_loss, reference.detach(), atol=1e-6)
    assert torch.allclose(grads[0], ref_grads[0], atol=1e-7) and torch.allclose(grads[1], ref_grads[1], atol=1e-7)
    # the naive per-micro-batch mean averaged over micro-batches is different here
    naive = sum(combine_loss_terms({"video": flow_loss_terms(pv, tv, 1, c)}) for pv, tv, c, _, _ in batches) / 2
    assert not torch.allclose(naive, v_err.mean())


def test_temporal_weight_adds_the_frame_to_frame_error_and_spares_static_errors():
    g = torch.Generator().manual_seed(9)
    target = torch.randn(2, 3, 5, 2, 2, generator=g)
    static = target + torch.randn(2, 3, 1, 2, 2, generator=g)  # the same error on every frame
    moving = target + torch.randn(2, 3, 5, 2, 2, generator=g)
    for pred in (static, moving):
        plain = flow_loss_terms(pred, target, 1)
        temporal = flow_loss_terms(pred, target, 1, temporal_weight=2.0, time_dim=2)
        diff = (pred - target).diff(dim=2).square().mean(1).sum()
        assert temporal.count == plain.count
        assert torch.allclose(temporal.sum, plain.sum + 2.0 * diff)
    assert torch.allclose(flow_loss_terms(static, target, 1, temporal_weight=2.0, time_dim=2).sum,
                          flow_loss_terms(static, target, 1).sum)
    # a clean (unsupervised) frame 0 takes the pair (0, 1) out too, and gets no gradient
    clean = leading_frames_mask(torch.tensor([True, False]), 5)
    pred = moving.clone().requires_grad_()
    terms = flow_loss_terms(pred, target, 1, clean, temporal_weight=1.0, time_dim=2)
    err = (moving - target)
    pair = err.diff(dim=2).square().mean(1)
    expected = err.square().mean(1)[1].sum() + err.square().mean(1)[0, 1:].sum() + pair[1].sum() + pair[0, 1:].sum()
    assert torch.allclose(terms.sum, expected)
    terms.sum.backward()
    assert pred.grad[0, :, 0].abs().max() == 0
    # the task's entry point reads the weight from LossConfig; negative weights are refused
    inputs = prepare_flow_inputs(target, torch.randn(2, 4, 3, generator=g), NoiseConfig(), g)
    v_audio = torch.zeros_like(inputs.audio_target)
    loss, _ = flow_matching_loss(moving, v_audio, inputs, LossConfig(video_temporal_weight=1.0))
    plain, _ = flow_matching_loss(moving, v_audio, inputs)
    e = moving - inputs.video_target
    assert torch.allclose(loss - plain, e.diff(dim=2).square().mean(1).sum() / e[:, 0].numel())
    with pytest.raises(ValueError, match="video_temporal_weight"):
        LossConfig(video_temporal_weight=-1.0)


def test_caption_dropout():
    g = torch.Generator().manual_seed(7)
    text = torch.randn(6, 4, 3, generator=g)
    null = torch.full((4, 3), -1.0)
    out, dropped = drop_captions(text, null, 0.0, g)
    assert torch.equal(out, text) and not dropped.any()
    out, dropped = drop_captions(text, null, 1.0, g)
    assert dropped.all() and torch.equal(out, null.expand(6, 4, 3))
    seqs = [torch.randn(n, 3, generator=g) for n in (2, 5, 7)]
    null_seq = torch.zeros(9, 3)
    out, dropped = drop_captions(seqs, null_seq, 0.5, torch.Generator().manual_seed(8))
    for o, s, d in zip(out, seqs, dropped.tolist()):
        assert torch.equal(o, null_seq if d else s)
    rate = drop_captions(torch.zeros(N, 1, 1), torch.ones(1, 1), 0.1, g)[1].float().mean().item()
    assert abs(rate - 0.1) < 0.01
    with pytest.raises(ValueError):
        drop_captions(text, torch.zeros(5, 3), 0.5, g)
