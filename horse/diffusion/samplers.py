"""Joint video+audio samplers for a timestep-free rectified-flow model (spec §5).

Velocity protocol
-----------------
Every sampler drives a ``velocity_fn`` with the signature::

    velocity_fn(video, audio, sigma_video, sigma_audio, step) -> (v_video, v_audio)

* ``video``: the current video latent ``[B, C, T, h, w]`` (for TI2V, latent frame 0 already replaced by the
  clean image latent); ``audio``: the current audio latent ``[B, Na, Ca]``.
* ``sigma_video`` / ``sigma_audio``: Python floats, the noise level of each state at this step, taken from
  the float64 schedule (so ``int(sigma * 1000)`` is the release's integer timestep). When audio is held
  fixed (``hold_audio=...``) ``sigma_audio`` is that fixed level: 0.0 for clean reference audio, 0.7 in
  the super-resolution stage. Likewise ``hold_video=0.0`` keeps a finished video as given (video-to-audio).
* ``step``: the 0-based step index.
* It returns the velocity estimates ``eps - x0`` with the shapes of its inputs, and must not modify its
  inputs in place. The release's DiT ignores sigma; the argument exists for guidance and for tests.

Guidance is a wrapper that builds one such function from a conditional and an unconditional one
(``horse.diffusion.guidance.classifier_free_guidance``).

Randomness and draw order (release parity, spec §5.8)
-----------------------------------------------------
All noise comes from an explicit ``torch.Generator``; tensors are drawn on the generator's device in
the state dtype and then moved. ``initial_noise`` draws the audio noise first and then the video noise.
The distilled sampler draws fresh noise at every step (also the last, where it is multiplied by 0),
video first then audio; a held modality draws nothing. UniPC and Euler are deterministic.

Steps: ``callback(step, num_steps)`` is called after each completed step with ``step`` in 1..num_steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from .flow import correlate_frames, x0_from_velocity
from .schedules import DEFAULT_SHIFT, DISTILL_NUM_STEPS, NUM_TRAIN_TIMESTEPS, FlowSchedule, flow_schedule

VelocityFn = Callable[[Tensor, Tensor, float, float, int], tuple[Tensor, Tensor]]
ProgressCallback = Callable[[int, int], None]

UNIPC_SOLVER_ORDER = 2


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None, dtype) -> Tensor:
    """Standard normal noise drawn on the generator's device (deterministic per seed), then moved."""
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return noise if device is None else noise.to(device)


def initial_noise(
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...] | None,
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    video_frame_correlation: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """Starting noise of the base stage: audio ``[B, Na, Ca]`` first, then video ``[B, C, T, h, w]``.

    Pass ``audio_shape=None`` when reference audio is given (A2V): then no audio noise is drawn.
    ``video_frame_correlation``: the model's frame-correlated noise prior (``flow.correlate_frames``).
    """
    audio = None if audio_shape is None else randn(audio_shape, generator, device, dtype)
    video = correlate_frames(randn(video_shape, generator, device, dtype), video_frame_correlation)
    return video, audio


class Stepper(Protocol):
    def step(self, velocity: Tensor, state: Tensor, index: int) -> Tensor: ...


class EulerStepper:
    """First-order flow step ``x + (sigma_{i+1} - sigma_i) * v`` (quick previews)."""

    def __init__(self, schedule: FlowSchedule):
        self.sigmas = schedule.sigmas_f32

    def step(self, velocity: Tensor, state: Tensor, index: int) -> Tensor:
        return state + (self.sigmas[index + 1] - self.sigmas[index]) * velocity


class DistilledStepper:
    """x0 prediction then fresh re-noising at the next level (the release's ``step_ddim``, spec §5.4)."""

    def __init__(self, schedule: FlowSchedule, generator: torch.Generator, video_frame_correlation: float = 0.0):
        self.sigmas = schedule.sigmas_f32
        self.generator = generator
        self.video_frame_correlation = video_frame_correlation

    def step(self, velocity: Tensor, state: Tensor, index: int) -> Tensor:
        noise = randn(state.shape, self.generator, state.device, state.dtype)
        if state.ndim == 5:  # video [B, C, T, h, w]: the model's frame-correlated prior
            noise = correlate_frames(noise, self.video_frame_correlation)
        x0_hat = x0_from_velocity(state, self.sigmas[index], velocity)
        nxt = self.sigmas[index + 1]
        return nxt * noise + (1 - nxt) * x0_hat


class UniPCStepper:
    """UniPC (order 2, bh2, corrector after the first step, lower-order warm-up and final step, x0 prediction
    from the flow velocity, final sigma 0), delegated to diffusers' ``UniPCMultistepScheduler``.

    Fed the release's float64 grid with ``flow_shift=1`` (the grid is already shifted), diffusers reproduces
    the release's ``FlowUniPCMultistepScheduler`` bit for bit (checked on CPU for 32, 8 and 5 steps).
    One instance per modality: the scheduler keeps the history of its own model outputs.
    """

    def __init__(self, schedule: FlowSchedule, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
        try:
            from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
        except ImportError as err:  # diffusers is an optional dependency of horse
            raise ImportError("the UniPC sampler needs diffusers: pip install 'diffusers>=0.35'") from err
        if float(schedule.sigmas[-1]) != 0.0:
            raise ValueError("the UniPC sampler needs a schedule that ends at sigma 0 (final_sigmas_type='zero')")
        self.timesteps = schedule.timesteps
        self.scheduler = UniPCMultistepScheduler(
            num_train_timesteps=num_train_timesteps,
            solver_order=UNIPC_SOLVER_ORDER,
            prediction_type="flow_prediction",
            predict_x0=True,
            solver_type="bh2",
            lower_order_final=True,
            disable_corrector=[],
            thresholding=False,
            use_flow_sigmas=True,
            flow_shift=1.0,
            final_sigmas_type="zero",
        )
        self.scheduler.set_timesteps(sigmas=schedule.sigmas[:-1].numpy())
        self.scheduler.set_begin_index(0)

    def step(self, velocity: Tensor, state: Tensor, index: int) -> Tensor:
        if self.scheduler.step_index not in (None, index):
            raise ValueError(f"UniPC steps must be taken in order: expected step {self.scheduler.step_index}, got {index}")
        return self.scheduler.step(velocity, self.timesteps[index], state, return_dict=False)[0]


def _check_frame0(video_frame0: Tensor | None, video: Tensor) -> Tensor | None:
    if video_frame0 is None:
        return None
    f = video_frame0
    if f.ndim != 5 or f.shape[:2] != video.shape[:2] or f.shape[3:] != video.shape[3:] or f.shape[2] > video.shape[2]:
        raise ValueError(
            f"video_frame0 must be [B, C, k, h, w] with k <= T matching the video {tuple(video.shape)}, "
            f"got {tuple(f.shape)}"
        )
    return f.to(device=video.device, dtype=video.dtype)


def _overwrite_frames(video: Tensor, frames: Tensor | None) -> Tensor:
    """Replace the leading latent frames with the clean conditioning frames (out of place)."""
    if frames is None:
        return video
    return torch.cat([frames, video[:, :, frames.shape[2] :]], dim=2)


def run_sampler(
    velocity_fn: VelocityFn,
    video: Tensor,
    audio: Tensor,
    schedule: FlowSchedule,
    video_stepper: Stepper | None,
    audio_stepper: Stepper | None,
    *,
    video_frame0: Tensor | None = None,
    hold_audio: float | None = None,
    hold_video: float | None = None,
    callback: ProgressCallback | None = None,
) -> tuple[Tensor, Tensor]:
    """The loop shared by every sampler; a modality's stepper may be None only when it is held."""
    if video.ndim != 5 or audio.ndim != 3 or video.shape[0] != audio.shape[0]:
        raise ValueError(
            f"expected video [B, C, T, h, w] and audio [B, Na, Ca] with the same B, got "
            f"{tuple(video.shape)} and {tuple(audio.shape)}"
        )
    if hold_audio is None and audio_stepper is None:
        raise ValueError("an audio stepper is required unless hold_audio is set")
    if hold_video is None and video_stepper is None:
        raise ValueError("a video stepper is required unless hold_video is set")
    if hold_video is not None and (hold_audio is not None or video_frame0 is not None):
        raise ValueError("hold_video keeps the whole video as given: it cannot be combined with hold_audio "
                         "(nothing would be sampled) or video_frame0 (the video is already fixed)")
    frame0 = _check_frame0(video_frame0, video)
    n = schedule.num_steps
    for i in range(n):
        video = _overwrite_frames(video, frame0)
        sigma = float(schedule.sigmas[i])
        sigma_video = sigma if hold_video is None else float(hold_video)
        sigma_audio = sigma if hold_audio is None else float(hold_audio)
        v_video, v_audio = velocity_fn(video, audio, sigma_video, sigma_audio, i)
        if v_video.shape != video.shape or v_audio.shape != audio.shape:
            raise ValueError(
                f"velocity_fn returned shapes {tuple(v_video.shape)}, {tuple(v_audio.shape)}; expected "
                f"{tuple(video.shape)}, {tuple(audio.shape)}"
            )
        if hold_video is None:
            video = video_stepper.step(v_video, video, i)
        if hold_audio is None:
            audio = audio_stepper.step(v_audio, audio, i)
        if callback is not None:
            callback(i + 1, n)
    return _overwrite_frames(video, frame0), audio


def _schedule(schedule: FlowSchedule | None, num_steps: int, shift: float) -> FlowSchedule:
    return schedule if schedule is not None else flow_schedule(num_steps, shift)


def sample_unipc(
    velocity_fn: VelocityFn,
    video: Tensor,
    audio: Tensor,
    *,
    num_steps: int = 32,
    shift: float = DEFAULT_SHIFT,
    schedule: FlowSchedule | None = None,
    video_frame0: Tensor | None = None,
    hold_audio: float | None = None,
    hold_video: float | None = None,
    callback: ProgressCallback | None = None,
) -> tuple[Tensor, Tensor]:
    """The release's base sampler: UniPC on video and audio with one scheduler per modality.

    ``video``/``audio`` are the starting states (noise from ``initial_noise``, reference audio with
    ``hold_audio=0.0``, or a finished video with ``hold_video=0.0``). ``schedule`` overrides
    ``num_steps``/``shift``. Returns the final (video, audio).
    """
    sched = _schedule(schedule, num_steps, shift)
    return run_sampler(
        velocity_fn, video, audio, sched, None if hold_video is not None else UniPCStepper(sched),
        None if hold_audio is not None else UniPCStepper(sched),
        video_frame0=video_frame0, hold_audio=hold_audio, hold_video=hold_video, callback=callback,
    )


def sample_euler(
    velocity_fn: VelocityFn,
    video: Tensor,
    audio: Tensor,
    *,
    num_steps: int = 32,
    shift: float = DEFAULT_SHIFT,
    schedule: FlowSchedule | None = None,
    video_frame0: Tensor | None = None,
    hold_audio: float | None = None,
    hold_video: float | None = None,
    callback: ProgressCallback | None = None,
) -> tuple[Tensor, Tensor]:
    """Plain Euler on the same grid (first order; for quick previews and tests)."""
    sched = _schedule(schedule, num_steps, shift)
    return run_sampler(
        velocity_fn, video, audio, sched, EulerStepper(sched), EulerStepper(sched),
        video_frame0=video_frame0, hold_audio=hold_audio, hold_video=hold_video, callback=callback,
    )


def sample_distilled(
    velocity_fn: VelocityFn,
    video: Tensor,
    audio: Tensor,
    generator: torch.Generator,
    *,
    num_steps: int = DISTILL_NUM_STEPS,
    shift: float = DEFAULT_SHIFT,
    schedule: FlowSchedule | None = None,
    video_frame0: Tensor | None = None,
    hold_audio: float | None = None,
    hold_video: float | None = None,
    callback: ProgressCallback | None = None,
    video_frame_correlation: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The distilled (DMD-2) sampler: predict x0, re-noise with fresh noise at the next of the 8 levels.

    Noise per step: video then audio, from ``generator``. Held audio (A2V) is kept as given and draws no
    noise; the release instead re-noises even reference audio on this path, which looks unintended.
    The video's fresh noise follows the model's ``video_frame_correlation`` prior.
    """
    sched = _schedule(schedule, num_steps, shift)
    stepper = DistilledStepper(sched, generator, video_frame_correlation)
    return run_sampler(
        velocity_fn, video, audio, sched, stepper, stepper,
        video_frame0=video_frame0, hold_audio=hold_audio, hold_video=hold_video, callback=callback,
    )
