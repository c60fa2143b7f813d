"""Rectified-flow training objective and samplers for joint video+audio latents (spec §5, §9).

Modules: ``flow`` (path maths), ``schedules`` (sigma grids, ZeroSNR table), ``objective`` (training noise),
``loss`` (per-modality token-weighted MSE), ``samplers`` (UniPC / Euler / distilled and the velocity
protocol), ``guidance`` (CFG wrapper), ``super_resolution`` (latent SR stage).
"""

from .flow import add_noise, eps_from_velocity, velocity_from_x0, velocity_target, x0_from_velocity
from .guidance import apply_guidance, classifier_free_guidance, frame_guidance_scales, video_guidance_scale
from .loss import (
    LossConfig,
    LossTerms,
    combine_loss_terms,
    count_loss_tokens,
    flow_loss_terms,
    flow_matching_loss,
    modality_loss_terms,
)
from .objective import (
    FlowTrainingInputs,
    NoiseConfig,
    drop_captions,
    leading_frames_mask,
    noise_latents,
    prepare_flow_inputs,
    sample_modality_sigmas,
    sample_sigmas,
)
from .samplers import (
    ProgressCallback,
    VelocityFn,
    initial_noise,
    run_sampler,
    sample_distilled,
    sample_euler,
    sample_unipc,
)
from .schedules import (
    FlowSchedule,
    distill_schedule,
    flow_schedule,
    shift_sigma,
    sr_schedule,
    timestep_from_sigma,
    zerosnr_alpha,
    zerosnr_sqrt_alpha_bar,
)
from .super_resolution import (
    noisy_sr_audio,
    prepare_super_resolution,
    sample_super_resolution,
    upsample_video_latent,
    zerosnr_renoise,
)
