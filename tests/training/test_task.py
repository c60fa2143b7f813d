"""The flow-matching task with temporally patched video tokens (DiTConfig.video_patch)."""

import pytest
import torch

from horse.model import DiTConfig, DiTModel
from horse.training import FlowMatchingTask

TINY = dict(num_layers=2, hidden_size=64, head_dim=16, num_query_groups=2, mm_layers=(0, 1), gelu7_layers=(0,),
            audio_in_channels=5, text_in_channels=7)


def _samples(frames=8, n=2):
    g = torch.Generator().manual_seed(0)
    return [{"video": torch.randn(3, frames, 4, 4, generator=g), "audio": torch.randn(4 * frames + 1, 5, generator=g),
             "text": torch.randn(3, 7, generator=g)} for _ in range(n)]


@pytest.mark.parametrize("pt", [1, 4])
def test_loss_covers_every_latent_frame_and_trains_the_video_input(pt):
    torch.manual_seed(0)
    model = DiTModel(DiTConfig(**TINY, video_in_channels=3 * pt * 4, video_patch=(pt, 2, 2)))
    task = FlowMatchingTask(model, null_text=torch.zeros(0, 7))
    out = task.compute(_samples(), torch.Generator().manual_seed(1))
    assert out.terms["video"].count == 2 * 8 * 4 * 4  # every latent position of both clips is supervised
    assert out.num_tokens == 2 * ((8 // pt) * 2 * 2 + 33 + 3)
    loss = sum(t.sum / t.count for t in out.terms.values())
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "video" in n and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_mismatched_video_width_is_named():
    model = DiTModel(DiTConfig(**TINY, video_in_channels=12, video_patch=(2, 2, 2)))
    with pytest.raises(ValueError, match="video_in_channels to 24"):
        FlowMatchingTask(model, null_text=torch.zeros(0, 7)).compute(_samples(), torch.Generator().manual_seed(1))


class CleanOracle(torch.nn.Module):
    """Outputs the clean latents of known samples in the model's output layout (a perfect sample predictor)."""

    def __init__(self, config, clean: list[dict]):
        super().__init__()
        from horse.model.packing import patchify_video
        self.config, self.anchor = config, torch.nn.Parameter(torch.zeros(()))
        self.rows = []
        for s in clean:
            self.rows.append(patchify_video(s["video"], "out", config.video_patch))
            self.rows.append(s["audio"])
            self.rows.append(torch.zeros(s["text"].shape[0], 1))

    def forward(self, x, coords, modality, cu_seqlens, **_):
        out = torch.zeros(x.shape[0], self.config.out_channels)
        o = 0
        for r in self.rows:
            out[o:o + r.shape[0], :r.shape[1]] = r
            o += r.shape[0]
        return out + 0 * self.anchor


@pytest.mark.parametrize("pt, context", [(1, 0), (2, 0), (1, 1)])
def test_sample_prediction_of_the_clean_latents_has_zero_loss(pt, context):
    """With video and audio prediction 'sample', outputting x0 is the optimum: the velocity loss is 0 (also with
    multi-frame tokens and context frames at the input, whose output is the token's own patch)."""
    from horse.diffusion.objective import NoiseConfig
    from horse.training.task import TaskConfig
    cfg = DiTConfig(**TINY, video_in_channels=3 * pt * 4 * (2 * context + 1), video_patch=(pt, 2, 2),
                    video_context_frames=context, video_prediction="sample", audio_prediction="sample")
    samples = _samples()
    noise = NoiseConfig(distribution="logit_normal", logit_mean=3.0)  # levels far above the 0.05 floor
    task = FlowMatchingTask(CleanOracle(cfg, samples), TaskConfig(noise=noise, caption_dropout=0.0))
    out = task.compute(samples, torch.Generator().manual_seed(1))
    assert out.terms["video"].sum.item() < 1e-9 and out.terms["audio"].sum.item() < 1e-9
    # the same oracle read as a velocity predictor is far off
    velocity_cfg = cfg.replace(video_prediction="velocity", audio_prediction="velocity")
    far = FlowMatchingTask(CleanOracle(velocity_cfg, samples), TaskConfig(noise=noise, caption_dropout=0.0))
    assert far.compute(samples, torch.Generator().manual_seed(1)).terms["video"].sum.item() > 1.0


def test_sampling_with_a_perfect_sample_predictor_lands_on_the_data():
    """make_velocity_fn turns sample outputs into velocities: one Euler step from pure noise gives x0."""
    from horse.pipeline.velocity import make_velocity_fn
    cfg = DiTConfig(**TINY, video_in_channels=12, video_prediction="sample", audio_prediction="sample")
    clean = _samples(n=1)[0]
    velocity = make_velocity_fn(CleanOracle(cfg, [clean]), clean["text"])
    g = torch.Generator().manual_seed(2)
    video = torch.randn(1, *clean["video"].shape, generator=g)
    audio = torch.randn(1, *clean["audio"].shape, generator=g)
    v_video, v_audio = velocity(video, audio, 1.0, 1.0, 0)
    torch.testing.assert_close(video - v_video, clean["video"][None])
    torch.testing.assert_close(audio - v_audio, clean["audio"][None])


def test_v2a_keeps_the_whole_video_clean_and_learns_only_the_audio():
    """objective.v2a_probability: a V2A sample's video enters the model clean and carries no loss."""
    from horse.model.packing import patchify_video
    from horse.training.task import TaskConfig
    torch.manual_seed(0)
    model = DiTModel(DiTConfig(**TINY, video_in_channels=12))
    seen = {}
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(x=kwargs["x"].clone()), with_kwargs=True)
    samples = _samples()
    out = FlowMatchingTask(model, TaskConfig(v2a_probability=1.0, caption_dropout=0.0)).compute(
        samples, torch.Generator().manual_seed(1))
    assert out.terms["video"].count == 0 and out.terms["audio"].count == 2 * 33
    rows = patchify_video(samples[0]["video"], "in", (1, 2, 2))
    assert torch.equal(seen["x"][: rows.shape[0], : rows.shape[1]], rows)  # the first clip's video, unnoised
    (out.terms["audio"].sum / out.terms["audio"].count).backward()
    audio_grads = [p.grad for n, p in model.named_parameters() if "audio" in n and p.grad is not None]
    assert audio_grads and any(g.abs().sum() > 0 for g in audio_grads)


def test_v2a_share_is_drawn_per_sample_and_validated():
    from horse.training.task import TaskConfig
    model = DiTModel(DiTConfig(**TINY, video_in_channels=12))
    task = FlowMatchingTask(model, TaskConfig(v2a_probability=0.5, caption_dropout=0.0))
    counts = {task.compute(_samples(n=4), torch.Generator().manual_seed(s)).terms["video"].count.item()
              for s in range(8)}
    per_clip = 8 * 4 * 4
    assert counts <= {k * per_clip for k in range(5)} and len(counts) > 1  # whole clips, a varying number
    with pytest.raises(ValueError, match="v2a_probability must lie in"):
        TaskConfig(v2a_probability=1.5)


def test_the_trainer_normaliser_counts_only_supervised_tokens():
    """count_tokens with the drawn modes equals the loss terms' own counts (clean TI2V / V2A video excluded), and
    modes drawn before compute continue the generator exactly as compute's own draw does."""
    from horse.training import count_tokens
    from horse.training.task import TaskConfig
    torch.manual_seed(0)
    task = FlowMatchingTask(DiTModel(DiTConfig(**TINY, video_in_channels=12)),
                            TaskConfig(ti2v_probability=0.5, v2a_probability=0.5, caption_dropout=0.0))
    samples, seen = _samples(n=4), set()
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        modes = task.draw_modes(len(samples), g)
        seen.update(zip(modes.ti2v, modes.v2a))
        out = task.compute(samples, g, modes=modes)
        counts = count_tokens(samples, modes)
        assert counts == {k: out.terms[k].count.item() for k in ("video", "audio")}
        same = task.compute(samples, torch.Generator().manual_seed(seed))
        assert torch.equal(same.terms["video"].sum, out.terms["video"].sum)
    assert {(True, False), (False, True), (False, False)} <= seen
    assert count_tokens(samples)["video"] == 4 * 8 * 4 * 4  # without modes every video token counts
    with pytest.raises(ValueError, match="modes are drawn for 3 samples"):
        task.compute(samples, torch.Generator(), modes=task.draw_modes(3, torch.Generator()))
