"""Sampling: inference schedulers and the jitted InstructPix2Pix / Reward-Edit sampler.

Public API::

    from rewardedit_jax.sampling import EditSampler, load_edit_image
    sampler = EditSampler.from_pipeline(convert.load_pipeline(path))  # or EditSampler(unet, vae, ...)
    out = sampler(load_edit_image("in.jpg"), "make it snowy", num_steps=30, seed=42)
    out.images  # (1, H, W, 3) uint8

See ``docs/sampling.md``.
"""

from rewardedit_jax.sampling.sampler import (
    DTYPES,
    LOW_REWARD_FEEDBACK,
    LOW_REWARD_SCORES,
    EditSampler,
    SampleOutput,
    edit_size,
    load_edit_image,
    resolve_dtype,
)
from rewardedit_jax.sampling.schedulers import SCHEDULERS, Schedule, make_schedule

__all__ = [
    "DTYPES",
    "LOW_REWARD_FEEDBACK",
    "LOW_REWARD_SCORES",
    "SCHEDULERS",
    "EditSampler",
    "SampleOutput",
    "Schedule",
    "edit_size",
    "load_edit_image",
    "make_schedule",
    "resolve_dtype",
]
