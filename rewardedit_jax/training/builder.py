"""The one builder of the jitted train step: abstract state, shaped batch, shardings and donation.

The trainer (real weights and data), ``python -m rewardedit_jax.aot`` (abstract shapes for any device
topology) and ``benchmarks/train_step.py`` all build their step here, so what is compiled ahead of time
or benchmarked is exactly what trains:

    components = builder.abstract_components(config)          # or the trainer's real models
    train_step = builder.build_train_step(config, mesh, components, schedule=..., latent=False)
    compiled = train_step.compile()                            # lower + compile, from shapes only
    state = train_step.init_state(params, seed)                # the trainer: real arrays, same shardings

A step takes ``(state, batch, frozen)`` and returns ``(state, metrics)`` (``rewardedit_jax.training.step``):
the state ``{step, params, opt_state, ema, rng}`` is sharded by the config's logical-axis rules and
donated; the batch is split over the ``(data, fsdp)`` mesh axes; the frozen inputs (VAE and text encoder
for image batches, the empty-prompt embedding, the U-Net's RNG state) are replicated. A latent batch
(``config.data.latent_cache``) needs neither encoder, so they are left out of the frozen inputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rewardedit_jax.schedule import NoiseSchedule
from rewardedit_jax.training import sharding as shard_lib
from rewardedit_jax.training import step as step_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
TEXT_LENGTH = 77  # CLIP's context: every tokenizer pads and truncates to it
NUM_SCORES = 3  # following, preserving, quality


@dataclasses.dataclass
class Components:
    """The models a train step uses (concrete or abstract ``nnx`` modules). ``vae`` and
    ``text_encoder`` may be ``None`` for latent batches."""

    unet: nnx.Module
    vae: nnx.Module | None
    text_encoder: nnx.Module | None


def abstract_components(config: ml_collections.ConfigDict, *, encoders: bool = True) -> Components:
    """Shape-only models of ``config.model.*`` (with the reward modules when ``config.reward.enabled``)."""
    from rewardedit_jax.models.clip_text import build_text_encoder
    from rewardedit_jax.models.reward import RewardConfig
    from rewardedit_jax.models.unet import UNetConfig, build_unet
    from rewardedit_jax.models.vae import build_vae

    compute = DTYPES[config.compute_dtype]
    unet_cfg = UNetConfig.from_diffusers(
        dict(config.model.unet.to_dict(), in_channels=config.model.in_channels),
        reward=RewardConfig(dropout=config.reward.dropout) if config.reward.enabled else None,
    )
    unet = build_unet(unet_cfg, dtype=compute, abstract=True)
    if not encoders:
        return Components(unet, None, None)
    return Components(
        unet,
        build_vae(config.model.vae.to_dict(), dtype=compute, abstract=True),
        build_text_encoder(config.model.text_encoder.to_dict(), dtype=compute, abstract=True),
    )


def scheduler_overrides(config) -> dict:
    """``config.model.scheduler`` and ``config.model.prediction_type`` (if set) as scheduler config keys."""
    overrides = dict(config.model.scheduler.to_dict())
    if config.model.prediction_type:
        overrides["prediction_type"] = config.model.prediction_type
    return overrides


def step_config(config, schedule: NoiseSchedule, scaling_factor: float) -> step_lib.StepConfig:
    """The train step's settings from ``config`` (the noise schedule and VAE scaling come from the model)."""
    return step_lib.StepConfig(
        schedule=schedule,
        scaling_factor=scaling_factor,
        cfg_dropout_prob=config.cfg_dropout_prob,
        reward=config.reward.enabled,
        grad_accum_steps=config.grad_accum_steps,
        ema_max_decay=config.ema.max_decay if config.ema.enabled else None,
        compute_dtype=DTYPES[config.compute_dtype],
        high_noise_fraction=config.timesteps.high_noise_fraction,
        high_noise_from=config.timesteps.high_noise_from,
    )


def batch_keys(reward: bool, latent: bool) -> tuple[str, ...]:
    """The batch fields a step reads: images and token ids, or cached latents and embeddings."""
    if latent:
        return step_lib.LATENT_KEYS + (("feedback_pooled", "reward_scores") if reward else ())
    return step_lib.IMAGE_KEYS + (("feedback_input_ids", "reward_scores") if reward else ())


def shaped_batch(
    config, *, latent: bool, text_dim: int, latent_channels: int, downsample_factor: int
) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch ``config`` implies, as shapes: ``batch_size`` images of ``data.resolution``
    (or their latents, 1/``downsample_factor`` the side, from a latent cache)."""
    b, r = config.batch_size, config.data.resolution
    f32, i32 = jnp.float32, jnp.int32
    if latent:
        if r % downsample_factor:
            raise shard_lib.ConfigError(
                f"config.data.resolution={r} is not a multiple of the VAE's downsampling {downsample_factor}"
            )
        side = r // downsample_factor
        latent_shape = (b, side, side, latent_channels)
        shapes = {
            "source_latent": latent_shape,
            "edited_latent_mean": latent_shape,
            "edited_latent_logvar": latent_shape,
            "encoder_hidden_states": (b, TEXT_LENGTH, text_dim),
            "feedback_pooled": (b, text_dim),
        }
        dtypes = {}
    else:
        shapes = {
            "source_image": (b, r, r, 3),
            "edited_image": (b, r, r, 3),
            "input_ids": (b, TEXT_LENGTH),
            "feedback_input_ids": (b, TEXT_LENGTH),
        }
        dtypes = {"input_ids": i32, "feedback_input_ids": i32}
    shapes["reward_scores"] = (b, NUM_SCORES)
    keys = batch_keys(config.reward.enabled, latent)
    return {k: jax.ShapeDtypeStruct(shapes[k], dtypes.get(k, f32)) for k in keys}


def optimizer_shardings(opt_state, params, params_sh, rep):
    """Optimizer-state shardings: every subtree shaped like the parameters (Adam's moments) follows the
    parameter shardings; everything else (step counts) is replicated."""
    params_def = jax.tree.structure(params)

    def rec(x):
        if jax.tree.structure(x) == params_def:
            return params_sh
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(rec(v) for v in x))
        if isinstance(x, (tuple, list)):
            return type(x)(rec(v) for v in x)
        return jax.tree.map(lambda _: rep, x)

    return rec(opt_state)


def _shape_of(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def with_shardings(tree, shardings):
    """``tree``'s leaves as ``ShapeDtypeStruct`` carrying ``shardings`` (what checkpoint restores take)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def shard_bytes(tree, shardings=None) -> int:
    """Bytes one device holds of ``tree`` under ``shardings`` (the largest shard of every leaf); with no
    shardings, the bytes of the whole tree."""
    leaves = jax.tree.leaves(tree)
    shardings = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
    if len(shardings) != len(leaves):
        raise ValueError(f"shard_bytes: {len(shardings)} shardings for {len(leaves)} leaves")
    total = 0
    for x, s in zip(leaves, shardings):
        shape = s.shard_shape(x.shape) if s is not None else x.shape
        total += math.prod(shape) * _itemsize(x.dtype)
    return total


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: two uint32 words
    return np.dtype(dtype).itemsize


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A config's train step on a mesh: the jitted function and everything needed to lower or feed it."""

    mesh: Mesh
    jitted: Any  # jax.jit(train_step) with in/out shardings and the state donated
    state: dict  # abstract train state (ShapeDtypeStruct leaves)
    batch: dict  # abstract global batch
    frozen: dict  # abstract frozen inputs
    state_shardings: dict  # NamedSharding per state leaf (checkpoints restore to these)
    state_formats: Any  # the jit's state in/out shardings: state_shardings, with layouts where chosen
    param_shardings: Any
    opt_shardings: Any
    batch_sharding: NamedSharding
    frozen_shardings: dict
    optimizer: optax.GradientTransformation
    layout: str  # the resolved config.state_layout
    attention: str  # config.attention, active while lowering

    def lower(self, attention: str | None = None):
        from rewardedit_jax.models.attention import attention_implementation

        with attention_implementation(attention or self.attention):
            return self.jitted.lower(self.state, self.batch, self.frozen)

    def compile(self, compiler_options: dict | None = None):
        return self.lower().compile(compiler_options)

    def state_bytes_per_device(self) -> int:
        """Bytes of the train state on one device, from the abstract state and its shardings."""
        return shard_bytes(self.state, self.state_shardings)

    def frozen_bytes_per_device(self) -> int:
        return shard_bytes(self.frozen, self.frozen_shardings)

    def init_state(self, params, seed: int) -> dict:
        """A fresh train state of ``params`` (host or device values) as global arrays, sharded."""
        params = shard_lib.to_global(params, self.param_shardings)
        opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(params)
        rep = shard_lib.replicated(self.mesh)
        return {
            "step": shard_lib.to_global(np.zeros((), np.int32), rep),
            "params": params,
            "opt_state": opt_state,
            "ema": jax.tree.map(jnp.copy, params) if self.state["ema"] is not None else None,
            "rng": shard_lib.to_global(jax.random.key_data(jax.random.key(seed)), rep),
        }

    def place_frozen(self, frozen: dict) -> dict:
        """Concrete frozen inputs (matching :attr:`frozen`'s structure) as replicated global arrays."""
        frozen = {k: frozen[k] for k in self.frozen}
        frozen["empty_embeds"] = jnp.asarray(frozen["empty_embeds"], self.frozen["empty_embeds"].dtype)
        return shard_lib.to_global(frozen, self.frozen_shardings)

    def check_batch(self, local: dict, what: str = "config.data.name") -> None:
        """One-line error when a host's batch does not have the fields and shapes the step was built for."""
        hosts = jax.process_count()
        missing = [k for k in self.batch if k not in local]
        if missing:
            raise shard_lib.ConfigError(
                f"{what}: the batches lack {missing} (reward.enabled needs a dataset with rewards)"
            )
        for key, spec in self.batch.items():
            want = (spec.shape[0] // hosts, *spec.shape[1:])
            got = tuple(np.shape(local[key]))
            if got != want:
                raise shard_lib.ConfigError(
                    f"{what}: batch field {key} has shape {got} per host; the config implies {want} "
                    "(check config.data.resolution, config.batch_size and the model)"
                )

    def place_batch(self, local: dict) -> dict:
        """This host's share of the global batch -> global arrays split over ``(data, fsdp)``."""
        return {
            k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(local[k], spec.dtype))
            for k, spec in self.batch.items()
        }


def build_train_step(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    components: Components,
    *,
    schedule: NoiseSchedule,
    latent: bool,
    empty_embeds_dtype=None,
    layout: str | None = None,
) -> TrainStep:
    """The jitted, sharded, donating train step of ``config`` for ``components`` on ``mesh``.

    ``latent``: the batch holds cached latents (no encoders run in the step). ``layout`` overrides
    ``config.state_layout`` (also ``xla_auto``: XLA chooses every state leaf's layout; benchmarks only).
    """
    compute = DTYPES[config.compute_dtype]
    unet = components.unet
    unet.remat = config.remat == "blocks"
    unet_g, params, unet_rngs = nnx.split(unet, nnx.Param, ...)
    params = jax.tree.map(_shape_of, params)
    rep = shard_lib.replicated(mesh)

    if latent:
        graphs = step_lib.Models(unet_g, None, None)
        frozen = {}
        text_dim = unet.config.cross_attention_dim[0]
        scaling = float(components.vae.scaling_factor) if components.vae is not None else None
    else:
        vae_g, vae_state = nnx.split(components.vae)
        te_g, te_state = nnx.split(components.text_encoder)
        graphs = step_lib.Models(unet_g, vae_g, te_g)
        frozen = {
            "vae": jax.tree.map(_shape_of, vae_state),
            "text_encoder": jax.tree.map(_shape_of, te_state),
        }
        text_dim = components.text_encoder.config.hidden_size
        scaling = float(components.vae.scaling_factor)
    if scaling is None:
        scaling = float(config.model.vae.get("scaling_factor", 0.18215))
    frozen["empty_embeds"] = jax.ShapeDtypeStruct((TEXT_LENGTH, text_dim), empty_embeds_dtype or compute)
    frozen["unet_rngs"] = jax.tree.map(_shape_of, unet_rngs)
    frozen_sh = jax.tree.map(lambda _: rep, frozen)

    vae_cfg = components.vae.config if components.vae is not None else None
    batch = shaped_batch(
        config,
        latent=latent,
        text_dim=text_dim,
        latent_channels=vae_cfg.latent_channels if vae_cfg else config.model.unet.get("out_channels", 4),
        downsample_factor=vae_cfg.downsample_factor if vae_cfg else _downsample_factor(config),
    )
    batch_sh = shard_lib.batch_sharding(mesh)

    optimizer = step_lib.make_optimizer(config)
    params_sh = shard_lib.param_shardings(params, dict(config.sharding_rules), mesh)
    opt_state = jax.eval_shape(optimizer.init, params)
    opt_sh = optimizer_shardings(opt_state, params, params_sh, rep)
    state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": params,
        "opt_state": opt_state,
        "ema": params if config.ema.enabled else None,
        "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
    }
    state_sh = {
        "step": rep,
        "params": params_sh,
        "opt_state": opt_sh,
        "ema": params_sh if config.ema.enabled else None,
        "rng": rep,
    }
    layout = layout or config.state_layout
    resolved = layout if layout == "xla_auto" else shard_lib.resolve_state_layout(layout)
    state_fmt = shard_lib.state_formats(state_sh, state, resolved)

    train_step = step_lib.make_train_step(
        graphs, step_config(config, schedule, scaling), optimizer, step_lib.learning_rate_schedule(config)
    )
    jitted = jax.jit(
        train_step,
        in_shardings=(state_fmt, jax.tree.map(lambda _: batch_sh, batch), frozen_sh),
        out_shardings=(state_fmt, rep),
        donate_argnums=(0,),
    )
    return TrainStep(
        mesh=mesh,
        jitted=jitted,
        state=state,
        batch=batch,
        frozen=frozen,
        state_shardings=state_sh,
        state_formats=state_fmt,
        param_shardings=params_sh,
        opt_shardings=opt_sh,
        batch_sharding=batch_sh,
        frozen_shardings=frozen_sh,
        optimizer=optimizer,
        layout=resolved,
        attention=config.attention,
    )


def abstract_train_step(config: ml_collections.ConfigDict, mesh: Mesh) -> TrainStep:
    """The train step of ``config`` from shapes alone (random-init architecture, SD 1.5's noise schedule
    with the config's overrides): what ``aot`` and ``compile_abstract`` compile."""
    latent = bool(config.data.latent_cache)
    schedule = NoiseSchedule.from_scheduler_config(
        dict(NoiseSchedule.sd15().config, **scheduler_overrides(config))
    )
    components = abstract_components(config, encoders=not latent)
    return build_train_step(config, mesh, components, schedule=schedule, latent=latent)


def _downsample_factor(config) -> int:
    vae = config.model.vae.to_dict()
    if vae.get("_class_name") == "IdentityAutoencoder":
        return 1
    return 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)


def describe_batch(config, mesh: Mesh) -> str:
    """``global batch B (per device b, per host h)`` for logs."""
    dp = math.prod(mesh.shape[a] for a in shard_lib.BATCH_AXES)
    per_device = config.batch_size / dp
    text = f"global batch {config.batch_size}, per device {per_device:g}"
    if config.grad_accum_steps > 1:
        text += f" ({per_device / config.grad_accum_steps:g} per micro-batch x {config.grad_accum_steps})"
    if mesh.size != dp:
        text += f" ({mesh.size // dp} devices share each batch shard)"
    return text
