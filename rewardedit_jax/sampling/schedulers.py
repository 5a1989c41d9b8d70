"""Inference schedulers for the editing sampler: Euler ancestral (the official default), Euler, DDIM.

Each is the discretization diffusers implements in ``EulerAncestralDiscreteScheduler``,
``EulerDiscreteScheduler`` and ``DDIMScheduler`` (Karras et al. 2022 Euler steps in sigma space; Song et
al. 2021 DDIM), reproduced as a :class:`Schedule`: tables computed once on the host for a given number
of steps, and pure functions of the step index that run inside ``jit`` / ``lax.fori_loop``::

    schedule = make_schedule("euler_ancestral", scheduler_config, num_steps=30)
    latents = noise * schedule.init_noise_sigma
    for i in range(schedule.num_steps):  # or lax.fori_loop
        model_input = schedule.scale_model_input(latents, i)
        eps = unet(model_input, schedule.timesteps[i], ...)
        latents = schedule.step(eps, i, latents, noise=step_noise)  # noise only for ancestral / DDIM eta>0

Settings come from a diffusers ``scheduler_config.json`` the way ``<Scheduler>.from_config`` reads it: a
key the config holds is used, a missing key takes the target scheduler's default (so ``timestep_spacing``
defaults to ``linspace`` for the Euler schedulers and ``leading`` for DDIM). Options that change the
discretization in ways not implemented here (Karras sigmas, zero-terminal-SNR rescaling, dynamic
thresholding, ...) are an error naming the key. All arithmetic is float32, as in diffusers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rewardedit_jax.schedule import NoiseSchedule, ScheduleError

SCHEDULERS = ("euler_ancestral", "euler", "ddim")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
# The diffusers class each scheduler reproduces (for messages and docs).
DIFFUSERS_CLASSES = {
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
}

# Per scheduler: every diffusers init key that matters here, with the class default.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "euler_ancestral": {"timestep_spacing": "linspace", "steps_offset": 0},
    "euler": {
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    },
    "ddim": {
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
    },
}
# Keys that must keep the value given here (key -> allowed value), per scheduler.
_UNSUPPORTED: dict[str, dict[str, Any]] = {
    "euler_ancestral": {"rescale_betas_zero_snr": False},
    "euler": {
        "rescale_betas_zero_snr": False,
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
    },
    "ddim": {"rescale_betas_zero_snr": False, "thresholding": False},
}


def scheduler_settings(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of scheduler ``kind`` read from a diffusers scheduler config (as ``from_config`` does)."""
    if kind not in SCHEDULERS:
        raise ScheduleError(f"unknown scheduler {kind!r} (supported: {', '.join(SCHEDULERS)})")
    # diffusers marks keys it filled with defaults on load; the target class's defaults win for those.
    defaulted = set(config.get("_use_default_values", ()))
    given = {k: v for k, v in config.items() if k not in defaulted and v is not None}
    for key, allowed in _UNSUPPORTED[kind].items():
        if given.get(key, allowed) not in (allowed, None):
            raise ScheduleError(
                f"scheduler config {key}={given[key]!r} is not supported by the {kind} scheduler "
                f"(only {allowed!r})"
            )
    settings = {key: given.get(key, default) for key, default in _DEFAULTS[kind].items()}
    if settings["timestep_spacing"] not in TIMESTEP_SPACINGS:
        raise ScheduleError(
            f"scheduler config timestep_spacing={settings['timestep_spacing']!r} "
            f"is not one of {TIMESTEP_SPACINGS}"
        )
    if kind == "euler" and settings["final_sigmas_type"] not in ("zero", "sigma_min"):
        raise ScheduleError(
            f"scheduler config final_sigmas_type={settings['final_sigmas_type']!r} (zero, sigma_min)"
        )
    if kind == "euler" and settings["timestep_type"] not in ("discrete", "continuous"):
        raise ScheduleError(
            f"scheduler config timestep_type={settings['timestep_type']!r} (discrete, continuous)"
        )
    return settings


def inference_timesteps(
    spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0, *, integer: bool = False
) -> np.ndarray:
    """The model timesteps of an ``num_steps`` schedule, descending (diffusers' ``set_timesteps``).

    ``integer`` gives DDIM's int64 timesteps (``linspace`` rounded); otherwise the Euler schedulers'
    float32 timesteps (``linspace`` fractional).
    """
    n_train = num_train_timesteps
    if num_steps < 1:
        raise ValueError(f"the number of inference steps must be positive; got {num_steps}")
    if num_steps > n_train:
        raise ValueError(f"{num_steps} inference steps exceed the {n_train} training timesteps")
    if spacing == "linspace":
        t = np.linspace(0, n_train - 1, num_steps, dtype=np.float64 if integer else np.float32)[::-1]
        t = t.round() if integer else t
    elif spacing == "leading":
        ratio = n_train // num_steps
        t = (np.arange(num_steps) * ratio).round()[::-1] + steps_offset
    elif spacing == "trailing":
        t = np.round(np.arange(n_train, 0, -n_train / num_steps)) - 1
    else:
        raise ScheduleError(f"timestep_spacing {spacing!r} is not one of {TIMESTEP_SPACINGS}")
    return np.ascontiguousarray(t).astype(np.int64 if integer else np.float32)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A discretized sampling schedule of ``num_steps`` steps (a pytree; tables are data, ``kind`` static).

    ``timesteps`` (n,) are the U-Net's timestep inputs. Euler schedulers use ``sigmas`` (n + 1,), the
    noise levels ``sqrt((1 - abar) / abar)`` interpolated at the timesteps with a final 0 (or sigma_min).
    DDIM uses ``alpha_t`` / ``alpha_prev`` (n,), the cumulative alphas at each timestep and at the
    timestep it steps to.
    """

    kind: str
    prediction_type: str
    timesteps: np.ndarray
    sigmas: np.ndarray
    alpha_t: np.ndarray
    alpha_prev: np.ndarray
    init_noise_sigma: float
    clip_sample_range: float | None = None  # DDIM: clip the predicted x0 to [-r, r]
    eta: float = 0.0  # DDIM: stochasticity (0 = deterministic DDIM)

    @property
    def num_steps(self) -> int:
        return int(np.shape(self.timesteps)[0])

    @property
    def needs_noise(self) -> bool:
        """Whether :meth:`step` takes fresh Gaussian noise (Euler ancestral, DDIM with eta > 0)."""
        return self.kind == "euler_ancestral" or (self.kind == "ddim" and self.eta > 0)

    def scale_model_input(self, sample: jax.Array, i: jax.Array | int) -> jax.Array:
        """The U-Net input at step ``i``: ``sample / sqrt(sigma_i^2 + 1)`` for Euler, unchanged for DDIM."""
        if self.kind == "ddim":
            return sample
        sigma = jnp.asarray(self.sigmas, jnp.float32)[i]
        return (sample.astype(jnp.float32) / jnp.sqrt(sigma**2 + 1)).astype(sample.dtype)

    def predict_x0(self, model_output: jax.Array, i: jax.Array | int, sample: jax.Array) -> jax.Array:
        """The denoised estimate implied by the model output at step ``i`` (float32)."""
        out, x = model_output.astype(jnp.float32), sample.astype(jnp.float32)
        if self.kind == "ddim":
            a = jnp.asarray(self.alpha_t, jnp.float32)[i]
            if self.prediction_type == "epsilon":
                return (x - jnp.sqrt(1 - a) * out) / jnp.sqrt(a)
            return jnp.sqrt(a) * x - jnp.sqrt(1 - a) * out
        sigma = jnp.asarray(self.sigmas, jnp.float32)[i]
        if self.prediction_type == "epsilon":
            return x - sigma * out
        return out * (-sigma / jnp.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)

    def step(
        self, model_output: jax.Array, i: jax.Array | int, sample: jax.Array, noise: jax.Array | None = None
    ) -> jax.Array:
        """The sample at step ``i + 1`` from the sample and the (guided) model output at step ``i``.

        ``noise`` (standard normal, the sample's shape) is required when :attr:`needs_noise`. Computed
        and returned in float32.
        """
        if self.needs_noise and noise is None:
            raise ValueError(f"the {self.kind} step needs noise (eta={self.eta})")
        x = sample.astype(jnp.float32)
        x0 = self.predict_x0(model_output, i, x)
        if self.kind == "ddim":
            return self._ddim_step(model_output, i, x, x0, noise)
        sigmas = jnp.asarray(self.sigmas, jnp.float32)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        derivative = (x - x0) / sigma
        if self.kind == "euler":
            return x + derivative * (sigma_next - sigma)
        # Ancestral: step deterministically down to sigma_down, then add fresh noise of std sigma_up.
        sigma_up = jnp.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        sigma_down = jnp.sqrt(sigma_next**2 - sigma_up**2)
        return x + derivative * (sigma_down - sigma) + noise.astype(jnp.float32) * sigma_up

    def _ddim_step(self, model_output, i, x, x0, noise):
        a = jnp.asarray(self.alpha_t, jnp.float32)[i]
        a_prev = jnp.asarray(self.alpha_prev, jnp.float32)[i]
        out = model_output.astype(jnp.float32)
        eps = out if self.prediction_type == "epsilon" else jnp.sqrt(a) * out + jnp.sqrt(1 - a) * x
        if self.clip_sample_range is not None:
            x0 = jnp.clip(x0, -self.clip_sample_range, self.clip_sample_range)
        if self.eta == 0:
            return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev) * eps
        variance = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        std = self.eta * jnp.sqrt(variance)
        direction = jnp.sqrt(1 - a_prev - std**2) * eps
        return jnp.sqrt(a_prev) * x0 + direction + std * noise.astype(jnp.float32)


jax.tree_util.register_dataclass(
    Schedule,
    data_fields=["timesteps", "sigmas", "alpha_t", "alpha_prev"],
    meta_fields=["kind", "prediction_type", "init_noise_sigma", "clip_sample_range", "eta"],
)


def _noise_schedule(config: Mapping[str, Any] | NoiseSchedule) -> tuple[NoiseSchedule, Mapping[str, Any]]:
    if isinstance(config, NoiseSchedule):
        return config, config.config
    return NoiseSchedule.from_scheduler_config(config), config


def make_schedule(
    kind: str, config: Mapping[str, Any] | NoiseSchedule, num_steps: int, *, eta: float = 0.0
) -> Schedule:
    """Build the ``num_steps`` schedule of scheduler ``kind`` from a diffusers scheduler config.

    ``config`` is the ``scheduler_config.json`` dict (or a :class:`NoiseSchedule` built from one): the
    training noise schedule (betas, ``prediction_type``) and the sampling options (``timestep_spacing``,
    ``steps_offset``, ...). ``eta`` applies to DDIM only.
    """
    noise_schedule, cfg = _noise_schedule(config)
    settings = scheduler_settings(kind, cfg)
    if eta and kind != "ddim":
        raise ValueError(f"eta applies to DDIM only, not {kind}")
    if eta < 0:
        raise ValueError(f"eta must be non-negative; got {eta}")
    n_train = noise_schedule.num_train_timesteps
    abar = noise_schedule.alphas_cumprod  # float64
    spacing, offset = settings["timestep_spacing"], int(settings["steps_offset"])
    empty = np.zeros((0,), np.float32)
    if kind == "ddim":
        timesteps = inference_timesteps(spacing, n_train, num_steps, offset, integer=True)
        if timesteps.max() >= n_train:
            raise ScheduleError(
                f"steps_offset={offset} puts timestep {timesteps.max()} past the {n_train} training timesteps"
            )
        # diffusers steps from t to t - T // n whatever the spacing; below 0 it uses the final alpha.
        prev = timesteps - n_train // num_steps
        final = 1.0 if settings["set_alpha_to_one"] else abar[0]
        alpha_prev = np.where(prev >= 0, abar[np.clip(prev, 0, None)], final)
        return Schedule(
            kind=kind,
            prediction_type=noise_schedule.prediction_type,
            timesteps=timesteps.astype(np.int32),
            sigmas=empty,
            alpha_t=abar[timesteps].astype(np.float32),
            alpha_prev=alpha_prev.astype(np.float32),
            init_noise_sigma=1.0,
            clip_sample_range=float(settings["clip_sample_range"]) if settings["clip_sample"] else None,
            eta=float(eta),
        )
    timesteps = inference_timesteps(spacing, n_train, num_steps, offset)
    train_sigmas = np.sqrt((1 - abar) / abar)
    sigmas = np.interp(timesteps.astype(np.float64), np.arange(n_train), train_sigmas)
    final_sigma = 0.0
    if kind == "euler" and settings["final_sigmas_type"] == "sigma_min":
        final_sigma = float(train_sigmas[0])
    sigmas = np.concatenate([sigmas, [final_sigma]]).astype(np.float32)
    if (
        kind == "euler"
        and settings["timestep_type"] == "continuous"
        and noise_schedule.prediction_type == ("v_prediction")
    ):
        timesteps = (0.25 * np.log(sigmas[:-1].astype(np.float64))).astype(np.float32)
    max_sigma = float(sigmas.max())
    init = max_sigma if spacing in ("linspace", "trailing") else math.sqrt(max_sigma**2 + 1)
    return Schedule(
        kind=kind,
        prediction_type=noise_schedule.prediction_type,
        timesteps=timesteps,
        sigmas=sigmas,
        alpha_t=empty,
        alpha_prev=empty,
        init_noise_sigma=init,
    )
