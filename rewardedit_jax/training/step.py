"""The jitted training step: InstructPix2Pix denoising loss with reward conditioning
(docs/sources.md, "Training recipe").

A pure function ``train_step(state, batch, frozen) -> (state, metrics)`` over plain pytrees:

- ``state``: ``{"step", "params", "opt_state", "ema", "rng"}`` (U-Net parameters as an ``nnx.State``
  pure dict, optax state, EMA parameters or ``None``, a raw PRNG key);
- ``batch``: images (``source_image``, ``edited_image`` NHWC in [-1, 1], ``input_ids``,
  ``feedback_input_ids``) or cached latents (``source_latent``, ``edited_latent_mean``,
  ``edited_latent_logvar``, ``encoder_hidden_states``, ``feedback_pooled``), plus ``reward_scores``;
- ``frozen``: the frozen VAE and text encoder states and the empty-prompt embedding.

Target latent = VAE posterior sample of the edited image x scaling factor; source latent = posterior
mode, unscaled. Timesteps uniform, or with a share drawn from the noisiest range (``sample_timesteps``).
CFG dropout with one uniform ``u`` per example: text -> empty prompt for ``u < 2p``, source
latent -> 0 for ``p <= u < 3p``. MSE in float32 against epsilon (or v). AdamW with global-norm clipping,
gradient accumulation over micro-batches, EMA ``decay = min(max_decay, (1 + s) / (10 + s))``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rewardedit_jax.schedule import NoiseSchedule

LATENT_KEYS = ("source_latent", "edited_latent_mean", "edited_latent_logvar", "encoder_hidden_states")
IMAGE_KEYS = ("source_image", "edited_image", "input_ids")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    schedule: NoiseSchedule
    scaling_factor: float
    cfg_dropout_prob: float
    reward: bool
    grad_accum_steps: int = 1
    ema_max_decay: float | None = 0.9999
    compute_dtype: Any = jnp.float32
    high_noise_fraction: float = 0.0  # share of timesteps drawn from [high_noise_from, T) instead of [0, T)
    high_noise_from: int = 900


@dataclasses.dataclass(frozen=True)
class Models:
    """Graph definitions of the U-Net (trained), VAE and text encoder (frozen)."""

    unet: nnx.GraphDef
    vae: nnx.GraphDef
    text_encoder: nnx.GraphDef


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW with warmup, a constant or cosine learning rate, and global-norm clipping."""
    schedule = learning_rate_schedule(config)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        ),
    )


def learning_rate_schedule(config) -> optax.Schedule:
    lr = config.learning_rate
    if config.lr_schedule == "constant":
        main = optax.constant_schedule(lr)
    elif config.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(config.total_steps - config.warmup_steps, 1))
    else:
        raise ValueError(f"config.lr_schedule must be constant or cosine, got {config.lr_schedule!r}")
    if config.warmup_steps > 0:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, config.warmup_steps), main], [config.warmup_steps]
        )
    return main


def encode_batch(batch: dict, frozen: dict, models: Models, cfg: StepConfig, key: jax.Array) -> dict:
    """Latents and text conditions of a batch (frozen encoders, or the latent cache)."""
    if "edited_latent_mean" in batch:
        mean, logvar = batch["edited_latent_mean"], batch["edited_latent_logvar"]
        source = batch["source_latent"]
        context = batch["encoder_hidden_states"]
        feedback = batch.get("feedback_pooled")
    else:
        vae = nnx.merge(models.vae, frozen["vae"])
        text_encoder = nnx.merge(models.text_encoder, frozen["text_encoder"])
        mean, logvar = vae.encode(batch["edited_image"])
        source, _ = vae.encode(batch["source_image"])  # posterior mode
        context, _ = text_encoder(batch["input_ids"])
        feedback = text_encoder(batch["feedback_input_ids"])[1] if cfg.reward else None
    eps = jax.random.normal(key, mean.shape, jnp.float32)
    edited = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps
    out = {
        "edited_latent": jax.lax.stop_gradient(edited * cfg.scaling_factor),
        "source_latent": jax.lax.stop_gradient(source.astype(jnp.float32)),
        "context": jax.lax.stop_gradient(context.astype(jnp.float32)),
    }
    if cfg.reward:
        out["feedback"] = jax.lax.stop_gradient(feedback.astype(jnp.float32))
        out["reward_scores"] = batch["reward_scores"].astype(jnp.float32)
    return out


def loss_fn(params, batch: dict, frozen: dict, models: Models, cfg: StepConfig, key: jax.Array):
    k_latent, k_noise, k_t, k_drop, k_model = jax.random.split(key, 5)
    enc = encode_batch(batch, frozen, models, cfg, k_latent)
    latents = enc["edited_latent"]
    b = latents.shape[0]
    noise = jax.random.normal(k_noise, latents.shape, jnp.float32)
    t = sample_timesteps(k_t, b, cfg)
    noisy = cfg.schedule.add_noise(latents, noise, t)

    p = cfg.cfg_dropout_prob
    u = jax.random.uniform(k_drop, (b,))
    empty = jnp.broadcast_to(frozen["empty_embeds"].astype(jnp.float32), enc["context"].shape)
    context = jnp.where((u < 2 * p)[:, None, None], empty, enc["context"])
    source = jnp.where(((u >= p) & (u < 3 * p))[:, None, None, None], 0.0, enc["source_latent"])

    rng_state = jax.tree.map(lambda x: x, frozen["unet_rngs"])  # fresh Variables in this trace
    unet = nnx.merge(models.unet, params, rng_state)
    nnx.reseed(unet, default=k_model)  # dropout keys derive from the step key
    unet.train()
    model_in = jnp.concatenate([noisy, source], axis=-1).astype(cfg.compute_dtype)
    kwargs = {}
    if cfg.reward:
        kwargs = {"reward_scores": enc["reward_scores"], "feedback_embeds": enc["feedback"]}
    pred = unet(model_in, t, context.astype(cfg.compute_dtype), **kwargs)
    target = cfg.schedule.target(latents, noise, t)
    return jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2)


def sample_timesteps(key: jax.Array, b: int, cfg: StepConfig) -> jax.Array:
    """(b,) int32 training timesteps: uniform over [0, T), except that each is, with probability
    ``high_noise_fraction``, uniform over [``high_noise_from``, T) instead.

    Where the noisy image still shows the colours of the result, the model reads them from it and learns
    nothing from the instruction; only the noisiest timesteps teach what the instruction asks for (the
    synthetic demo reads a shape's colour from the noise below about t = 900 of a cosine schedule, so
    uniform timesteps give the instruction about a tenth of the steps).
    """
    n = cfg.schedule.num_train_timesteps
    if cfg.high_noise_fraction <= 0:
        return jax.random.randint(key, (b,), 0, n)
    k_t, k_high, k_pick = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (b,), 0, n)
    high = jax.random.randint(k_high, (b,), min(cfg.high_noise_from, n - 1), n)
    return jnp.where(jax.random.uniform(k_pick, (b,)) < cfg.high_noise_fraction, high, t)


def _micro_batches(batch: dict, n: int) -> dict:
    """(B, ...) -> (n, B/n, ...) taking every n-th row, so each device's rows spread over micro-batches."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1), batch)


def ema_decay(step: jax.Array, max_decay: float) -> jax.Array:
    s = step.astype(jnp.float32)
    return jnp.minimum(max_decay, (1.0 + s) / (10.0 + s))


def make_train_step(models: Models, cfg: StepConfig, optimizer: optax.GradientTransformation, lr_schedule):
    grad_fn = jax.value_and_grad(loss_fn)

    def train_step(state: dict, batch: dict, frozen: dict) -> tuple[dict, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        params = state["params"]
        n = cfg.grad_accum_steps
        if n == 1:
            loss, grads = grad_fn(params, batch, frozen, models, cfg, key)
        else:
            micro = _micro_batches(batch, n)

            def body(carry, xs):
                index, mb = xs
                loss, grads = grad_fn(params, mb, frozen, models, cfg, jax.random.fold_in(key, index))
                return jax.tree.map(jnp.add, carry, (loss, grads)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(n), micro))
            loss, grads = jax.tree.map(lambda x: x / n, (loss, grads))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        ema = state["ema"]
        if ema is not None:
            d = ema_decay(state["step"], cfg.ema_max_decay)
            ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, new_params)
        new_state = {
            "step": state["step"] + 1,
            "params": new_params,
            "opt_state": opt_state,
            "ema": ema,
            "rng": state["rng"],
        }
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": jnp.asarray(lr_schedule(state["step"]), jnp.float32),
        }
        return new_state, metrics

    return train_step
