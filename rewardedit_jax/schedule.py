"""The DDPM noise schedule shared by training and sampling (docs/sources.md, "Training recipe").

Built from a diffusers ``scheduler/scheduler_config.json``: ``num_train_timesteps``, ``beta_start``,
``beta_end``, ``beta_schedule`` (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``), ``trained_betas``,
``prediction_type`` (``epsilon`` or ``v_prediction``). SD 1.5: 1000 steps, scaled_linear 0.00085 -> 0.012.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# diffusers scheduler classes whose training noise schedule is described by the keys above.
KNOWN_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
)
PREDICTION_TYPES = ("epsilon", "v_prediction")


class ScheduleError(ValueError):
    """A scheduler config this project cannot use (the message names the key or class)."""


def _betas(cfg: Mapping[str, Any], n: int) -> np.ndarray:
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)
        if betas.shape != (n,):
            raise ScheduleError(f"trained_betas has {betas.size} entries for num_train_timesteps={n}")
        return betas
    kind = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    if kind == "linear":
        return np.linspace(start, end, n, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    if kind == "squaredcos_cap_v2":

        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])
    raise ScheduleError(f"unsupported beta_schedule {kind!r} (linear, scaled_linear, squaredcos_cap_v2)")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """Discrete-time forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``."""

    betas: np.ndarray  # (T,) float64
    prediction_type: str = "epsilon"
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @classmethod
    def from_scheduler_config(cls, cfg: Mapping[str, Any]) -> NoiseSchedule:
        name = cfg.get("_class_name")
        if name is not None and name not in KNOWN_SCHEDULERS:
            raise ScheduleError(f"unknown scheduler type {name!r}")
        prediction = cfg.get("prediction_type", "epsilon")
        if prediction not in PREDICTION_TYPES:
            raise ScheduleError(f"unsupported prediction_type {prediction!r} (supported: {PREDICTION_TYPES})")
        n = int(cfg.get("num_train_timesteps", 1000))
        return cls(betas=_betas(cfg, n), prediction_type=prediction, config=dict(cfg))

    @classmethod
    def sd15(cls) -> NoiseSchedule:
        from rewardedit_jax.configs.sd15 import SD15_SCHEDULER

        return cls.from_scheduler_config(SD15_SCHEDULER)

    def add_noise(self, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
        """``q(x_t | x_0)`` for integer timesteps (B,), NHWC ``x0``; computed in float32."""
        abar = jnp.asarray(self.alphas_cumprod, jnp.float32)[timesteps]
        shape = (-1,) + (1,) * (x0.ndim - 1)
        a, s = jnp.sqrt(abar).reshape(shape), jnp.sqrt(1.0 - abar).reshape(shape)
        return (a * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)

    def target(self, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
        """The regression target: ``noise`` (epsilon) or ``v = sqrt(abar) eps - sqrt(1-abar) x0``."""
        if self.prediction_type == "epsilon":
            return noise
        abar = jnp.asarray(self.alphas_cumprod, jnp.float32)[timesteps]
        shape = (-1,) + (1,) * (x0.ndim - 1)
        a, s = jnp.sqrt(abar).reshape(shape), jnp.sqrt(1.0 - abar).reshape(shape)
        return (a * noise.astype(jnp.float32) - s * x0.astype(jnp.float32)).astype(noise.dtype)
