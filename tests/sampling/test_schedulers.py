"""The Euler-ancestral, Euler and DDIM schedules and steps match diffusers' schedulers number for number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from diffusers.schedulers import scheduling_euler_ancestral_discrete

from rewardedit_jax.configs.sd15 import SD15_SCHEDULER
from rewardedit_jax.sampling.schedulers import make_schedule, scheduler_settings
from rewardedit_jax.schedule import ScheduleError

DIFFUSERS = {
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "euler": EulerDiscreteScheduler,
    "ddim": DDIMScheduler,
}
SD_CONFIG = dict(SD15_SCHEDULER)  # the SD 1.5 training schedule
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (2, 4, 6, 5)  # NCHW for diffusers; the same numbers are fed to ours (elementwise ops)


def diffusers_scheduler(kind: str, config: dict, num_steps: int):
    scheduler = DIFFUSERS[kind].from_config(config)
    scheduler.set_timesteps(num_steps)
    return scheduler


@pytest.mark.parametrize("kind", ["euler_ancestral", "euler", "ddim"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", None])
@pytest.mark.parametrize("num_steps", [30, 7])
def test_schedule_tables_match_diffusers(kind, spacing, num_steps):
    config = dict(SD_CONFIG, timestep_spacing=spacing) if spacing else dict(SD_CONFIG)
    ours = make_schedule(kind, config, num_steps)
    ref = diffusers_scheduler(kind, config, num_steps)
    if kind == "ddim":
        np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
        abar = ref.alphas_cumprod.double().numpy()
        prev = ref.timesteps.numpy() - 1000 // num_steps
        prev_abar = np.where(prev >= 0, abar[np.clip(prev, 0, None)], float(ref.final_alpha_cumprod))
        np.testing.assert_allclose(ours.alpha_t, abar[ref.timesteps.numpy()], rtol=1e-5)
        np.testing.assert_allclose(ours.alpha_prev, prev_abar, rtol=1e-5)
    else:
        np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-5)


def _model_output(sample: np.ndarray, i: int) -> np.ndarray:
    """A deterministic stand-in for the U-Net (depends on the sample, so trajectories can diverge)."""
    rng = np.random.default_rng(100 + i)
    return (0.4 * np.tanh(sample) + rng.standard_normal(sample.shape)).astype(np.float32)


def _run_ours(schedule, sample, noises=None):
    out = [sample]
    x = jnp.asarray(sample)
    for i in range(schedule.num_steps):
        model_in = np.asarray(schedule.scale_model_input(x, i))
        eps = jnp.asarray(_model_output(model_in, i))
        noise = None if noises is None else jnp.asarray(noises[i])
        x = schedule.step(eps, i, x, noise)
        out.append(np.asarray(x))
    return out


def _run_diffusers(scheduler, sample):
    out = [sample]
    x = torch.from_numpy(sample)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t).numpy()
        eps = torch.from_numpy(_model_output(model_in, i))
        x = scheduler.step(eps, t, x).prev_sample
        out.append(x.numpy())
    return out


def _assert_trajectories_close(ours, ref, rtol):
    for i, (a, b) in enumerate(zip(ours, ref)):
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rel <= rtol, f"step {i}: relative error {rel:.2e}"


@pytest.mark.parametrize("kind", ["euler", "ddim"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_deterministic_steps_match_diffusers(kind, prediction_type, spacing):
    config = dict(SD_CONFIG, prediction_type=prediction_type, timestep_spacing=spacing)
    schedule = make_schedule(kind, config, 12)
    scheduler = diffusers_scheduler(kind, config, 12)
    sample = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32) * schedule.init_noise_sigma
    _assert_trajectories_close(_run_ours(schedule, sample), _run_diffusers(scheduler, sample), 1e-5)


def test_ddim_clips_the_predicted_sample_like_diffusers():
    config = dict(SD_CONFIG, clip_sample=True, clip_sample_range=0.5, set_alpha_to_one=True)
    schedule = make_schedule("ddim", config, 8)
    assert schedule.clip_sample_range == 0.5
    sample = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32) * 3
    ref = _run_diffusers(diffusers_scheduler("ddim", config, 8), sample)
    _assert_trajectories_close(_run_ours(schedule, sample), ref, 1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_euler_ancestral_steps_match_diffusers_for_the_same_noise(monkeypatch, prediction_type, spacing):
    num_steps = 10
    config = dict(SD_CONFIG, prediction_type=prediction_type, timestep_spacing=spacing)
    noises = np.random.default_rng(7).standard_normal((num_steps,) + SHAPE).astype(np.float32)
    draws = iter(noises)
    # diffusers draws the step noise with randn_tensor; hand it the same draws, one per step.
    monkeypatch.setattr(
        scheduling_euler_ancestral_discrete, "randn_tensor", lambda shape, **kw: torch.from_numpy(next(draws))
    )
    schedule = make_schedule("euler_ancestral", config, num_steps)
    assert schedule.needs_noise
    sample = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32) * schedule.init_noise_sigma
    ref = _run_diffusers(diffusers_scheduler("euler_ancestral", config, num_steps), sample)
    _assert_trajectories_close(_run_ours(schedule, sample, noises), ref, 1e-5)


def test_euler_ancestral_runs_inside_a_jitted_fori_loop():
    """The schedule is a pytree and its step a pure function of a traced step index."""
    schedule = make_schedule("euler_ancestral", SD_CONFIG, 6)
    sample = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    noises = np.random.default_rng(1).standard_normal((6,) + SHAPE).astype(np.float32)

    @jax.jit
    def loop(schedule, x, noises):
        def body(i, x):
            return schedule.step(-0.5 * schedule.scale_model_input(x, i), i, x, noises[i])

        return jax.lax.fori_loop(0, schedule.num_steps, body, x)

    x = jnp.asarray(sample)
    for i in range(6):
        x = schedule.step(-0.5 * schedule.scale_model_input(x, i), i, x, jnp.asarray(noises[i]))
    np.testing.assert_allclose(
        np.asarray(loop(schedule, sample, noises)), np.asarray(x), rtol=1e-5, atol=1e-6
    )


def test_settings_follow_diffusers_from_config_defaults():
    # No timestep_spacing in the config: each scheduler's own default applies.
    assert scheduler_settings("euler_ancestral", SD_CONFIG)["timestep_spacing"] == "linspace"
    assert scheduler_settings("ddim", SD_CONFIG)["timestep_spacing"] == "leading"
    # Keys diffusers filled with its defaults on load do not override the target's defaults.
    loaded = dict(SD_CONFIG, timestep_spacing="leading", _use_default_values=["timestep_spacing"])
    assert scheduler_settings("euler", loaded)["timestep_spacing"] == "linspace"
    # DDIM clips x0 by default (diffusers' DDIMScheduler default), unless the config says otherwise.
    assert make_schedule("ddim", {"beta_schedule": "linear"}, 4).clip_sample_range == 1.0
    assert make_schedule("ddim", SD_CONFIG, 4).clip_sample_range is None


@pytest.mark.parametrize(
    "kind, key, value",
    [
        ("euler", "use_karras_sigmas", True),
        ("euler", "interpolation_type", "log_linear"),
        ("ddim", "thresholding", True),
        ("euler_ancestral", "rescale_betas_zero_snr", True),
        ("euler_ancestral", "timestep_spacing", "karras"),
    ],
)
def test_unsupported_scheduler_options_are_errors_naming_the_key(kind, key, value):
    with pytest.raises(ScheduleError, match=key):
        make_schedule(kind, dict(SD_CONFIG, **{key: value}), 10)


def test_unknown_scheduler_is_an_error():
    with pytest.raises(ScheduleError, match="unknown scheduler"):
        make_schedule("dpm", SD_CONFIG, 10)
