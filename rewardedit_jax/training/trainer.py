"""``train_and_evaluate(config, workdir)``: stage 1 (InstructPix2Pix) and stage 2 (reward) training.

One ahead-of-time compiled, sharded, donated train step over a (data, fsdp, tensor) mesh; Orbax
checkpoints (train state + data-iterator state) every ``checkpoint_every_steps`` and on SIGTERM; exact
resume from the same workdir; a NaN/Inf guard naming the step; metrics in ``metrics.jsonl``, TensorBoard
and optionally W&B (:mod:`rewardedit_jax.training.metrics`). Works on one CPU, one GPU, multi-node GPU and
TPU pods (every host runs the same command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rewardedit_jax import checkpoints as checkpoints_lib
from rewardedit_jax import hub
from rewardedit_jax import workdir as workdir_lib
from rewardedit_jax.convert import model_dir as model_dir_lib
from rewardedit_jax.io import checkpoint_dir, makedirs, read_json, to_path
from rewardedit_jax.schedule import PREDICTION_TYPES, NoiseSchedule, ScheduleError
from rewardedit_jax.training import builder
from rewardedit_jax.training import evals as evals_lib
from rewardedit_jax.training import sharding as shard_lib
from rewardedit_jax.training.metrics import MetricsWriter, check_wandb_config
from rewardedit_jax.training.sharding import ConfigError

log = logging.getLogger("rewardedit_jax.train")

DTYPES = builder.DTYPES


class TrainingError(RuntimeError):
    """The run stopped (NaN/Inf loss, ...); the message names the step."""


# --- config validation (before anything expensive) ------------------------------------------------------


def _default_config() -> ml_collections.ConfigDict:
    from rewardedit_jax.configs import default

    return default.get_config()


def check_config(config: ml_collections.ConfigDict, devices) -> tuple[int, int, int]:
    """Validate ``config`` against the default schema and ``devices`` (a list, or a count); returns the
    mesh shape."""
    _check_keys(config, _default_config(), "config")
    evals_lib.check_evals(config)
    check_wandb_config(_wandb_settings(config))
    if config.batch_size <= 0 or config.total_steps <= 0:
        raise ConfigError("config.batch_size and config.total_steps must be positive")
    shape = shard_lib.mesh_shape(dict(config.mesh), devices)
    rules = dict(config.sharding_rules)
    conv_axes = {rules.get("conv_in"), rules.get("conv_out")} - {None}
    if len(conv_axes) == 2 and min(shape) > 1:
        raise ConfigError(
            f"config.sharding_rules split convolution kernels over {' and '.join(sorted(conv_axes))} on a "
            f"mesh whose data, fsdp and tensor axes are all > 1 ({shape}): jax's SPMD partitioner computes "
            "wrong gradients there (docs/scaling.md); map conv_in or conv_out to None"
        )
    dp = shape[0] * shape[1]
    if config.batch_size % (dp * config.grad_accum_steps):
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by data-parallel size {dp} x "
            f"grad_accum_steps {config.grad_accum_steps}"
        )
    hosts = jax.process_count() if isinstance(devices, int) else len({d.process_index for d in devices})
    if config.batch_size % hosts:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by {hosts} hosts")
    if config.compute_dtype not in DTYPES:
        raise ConfigError(
            f"config.compute_dtype must be one of {sorted(DTYPES)}, got {config.compute_dtype!r}"
        )
    if config.model.prediction_type not in ("", *PREDICTION_TYPES):
        raise ConfigError(
            f"config.model.prediction_type must be '' or one of {', '.join(PREDICTION_TYPES)}, "
            f"got {config.model.prediction_type!r}"
        )
    try:
        NoiseSchedule.from_scheduler_config(dict(NoiseSchedule.sd15().config, **scheduler_overrides(config)))
    except ScheduleError as e:
        raise ConfigError(f"config.model.scheduler: {e}") from None
    if config.remat not in ("none", "blocks"):
        raise ConfigError(f"config.remat must be none or blocks, got {config.remat!r}")
    shard_lib.resolve_state_layout(config.state_layout)
    ts = config.timesteps
    if not 0.0 <= ts.high_noise_fraction <= 1.0:
        raise ConfigError(
            f"config.timesteps.high_noise_fraction must be in [0, 1], got {ts.high_noise_fraction}"
        )
    steps = dict(NoiseSchedule.sd15().config, **scheduler_overrides(config))["num_train_timesteps"]
    if not 0 <= ts.high_noise_from < steps:
        raise ConfigError(
            f"config.timesteps.high_noise_from must be in [0, {steps}) (the training timesteps), "
            f"got {ts.high_noise_from}"
        )
    if not config.init_from and not config.model.unet:
        raise ConfigError("config.init_from is empty and config.model.unet gives no config for random init")
    # A Hugging Face Hub id is resolved (downloaded, once per process) here: a bad one fails before any model.
    if config.init_from and not to_path(hub.local_folder(config.init_from)).exists():
        raise ConfigError(f"config.init_from: {config.init_from} does not exist")
    return shape


scheduler_overrides = builder.scheduler_overrides


def _wandb_settings(config: ml_collections.ConfigDict) -> dict:
    metrics = config.get("metrics") or {}
    return dict(metrics.get("wandb") or {})


def _check_keys(config, reference, prefix: str) -> None:
    free = {"unet", "vae", "text_encoder", "scheduler", "evals"}  # diffusers configs; evals: check_evals
    for key in config.keys():
        if key not in reference:
            raise ConfigError(f"unknown config key {prefix}.{key}")
        if isinstance(config[key], ml_collections.ConfigDict) and key not in free:
            _check_keys(config[key], reference[key], f"{prefix}.{key}")


# --- models ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainModels:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    unet_config: dict  # diffusers config.json of the U-Net (for export)
    vae_config: dict
    text_encoder_config: dict


def build_models(config, workdir: Path) -> TrainModels:
    """The models to train: from the workdir (restart), ``init_from``, or random init."""
    from rewardedit_jax.convert import pipeline as pipeline_lib
    from rewardedit_jax.convert import unet as unet_convert
    from rewardedit_jax.models.reward import RewardConfig

    compute = DTYPES[config.compute_dtype]
    model_path = workdir / workdir_lib.MODEL
    # The U-Net parameters of the workdir's model/ come from its checkpoints: a run killed before its first
    # checkpoint starts again from the same models as the first start.
    restart = checkpoints_lib.complete_steps(workdir / workdir_lib.CHECKPOINTS)
    if restart and model_path.is_dir() and model_dir_lib.is_model_dir(model_path):
        return _load_model_dir(model_path, compute)
    init_from = hub.local_folder(config.init_from) if config.init_from else ""  # a Hub id: resolved once
    if not init_from:
        models = _random_models(config, compute)
    elif workdir_lib.is_workdir(init_from):
        models = _load_model_dir(to_path(init_from) / workdir_lib.MODEL, compute)
        step = workdir_lib.load_unet_params(init_from, models.unet, ema=config.init_from_ema)
        log.info("initialized the U-Net from %s step %d", init_from, step)
    else:
        p = pipeline_lib.load_pipeline(init_from, compute_dtype=compute)
        components, _ = pipeline_lib.layout_of(init_from)
        src = to_path(init_from)

        def cfg_of(name):
            if model_dir_lib.is_model_dir(src):
                return model_dir_lib.component_config(src / name)[0]
            from rewardedit_jax.convert.weights import read_json

            return read_json(src / name / "config.json")

        models = TrainModels(
            p.unet,
            p.vae,
            p.text_encoder,
            p.tokenizer,
            p.scheduler_config,
            cfg_of("unet"),
            cfg_of("vae"),
            cfg_of("text_encoder"),
        )
    unet = models.unet
    if unet.config.in_channels != config.model.in_channels:
        unet = unet_convert.expand_input_channels(unet, config.model.in_channels)
    if config.reward.enabled and not unet.has_reward:
        unet = unet_convert.add_reward_conditioning(
            unet, RewardConfig(dropout=config.reward.dropout), seed=config.seed
        )
    elif unet.has_reward and not config.reward.enabled:
        raise ConfigError("config.init_from has reward modules; set config.reward.enabled=True to train them")
    models.unet = unet
    return models


def _random_models(config, compute) -> TrainModels:
    from rewardedit_jax.models.clip_text import build_text_encoder
    from rewardedit_jax.models.unet import build_unet
    from rewardedit_jax.models.vae import build_vae
    from rewardedit_jax.tokenizer import load_tokenizer

    unet_cfg = dict(config.model.unet.to_dict(), in_channels=config.model.in_channels)
    vae_cfg, te_cfg = config.model.vae.to_dict(), config.model.text_encoder.to_dict()
    if config.model.tokenizer:
        tokenizer = load_tokenizer(config.model.tokenizer)
    else:
        tokenizer = _dataset_tokenizer(config)
        # The vocabulary is known only now: the text encoder's embedding table and special ids follow it.
        te_cfg.update(
            vocab_size=tokenizer.vocab_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    key = config.seed
    scheduler = dict(NoiseSchedule.sd15().config, _class_name="DDPMScheduler")
    return TrainModels(
        unet=build_unet(unet_cfg, seed=key, dtype=compute),
        vae=build_vae(vae_cfg, seed=key + 1, dtype=compute),
        text_encoder=build_text_encoder(te_cfg, seed=key + 2, dtype=compute),
        tokenizer=tokenizer,
        scheduler_config=scheduler,
        unet_config=unet_cfg,
        vae_config=vae_cfg,
        text_encoder_config=te_cfg,
    )


def _dataset_tokenizer(config):
    """The word tokenizer of ``config.data.name``, for ``config.model.tokenizer=''``; saved in DIR/model."""
    from rewardedit_jax.data import vocabulary

    if config.data.latent_cache:
        raise ConfigError(
            "config.model.tokenizer is empty (a word tokenizer made from the texts of config.data.name), but "
            "config.data.latent_cache holds texts already encoded: give the tokenizer they were encoded with"
        )
    data_dir = _data_dir(config)
    log.info("config.model.tokenizer is empty: making the word tokenizer of %s", config.data.name)
    return vocabulary.dataset_tokenizer(config.data.name, data_dir)


def _load_model_dir(path: Path, compute) -> TrainModels:
    from rewardedit_jax.convert import clip_text, unet, vae
    from rewardedit_jax.convert.weights import read_json
    from rewardedit_jax.tokenizer import load_tokenizer

    unet_config, extra = model_dir_lib.component_config(path / "unet")
    reward = None
    if extra.get("reward"):
        from rewardedit_jax.models.reward import RewardConfig

        reward = RewardConfig(**extra["reward"])
    cfg = unet.unet_config(unet_config, path / "unet" / "config.json", reward)
    unet_model = unet.build_abstract(cfg, compute)
    if (path / "unet" / "params").is_dir():
        model_dir_lib.restore_params(path / "unet", unet_model)
    else:  # a training workdir's model/: parameters come from the checkpoints
        from rewardedit_jax.models.layers import fill_random_

        fill_random_(unet_model)
    from rewardedit_jax.convert.mapping import finish_loaded

    finish_loaded(unet_model)
    vae_model, vae_cfg = vae.load_flax_vae(path / "vae", compute_dtype=compute)
    te_model, te_cfg = clip_text.load_flax_text_encoder(path / "text_encoder", compute_dtype=compute)
    return TrainModels(
        unet_model,
        vae_model,
        te_model,
        load_tokenizer(path / "tokenizer"),
        read_json(path / "scheduler" / "scheduler_config.json"),
        unet_config,
        vae_cfg,
        te_cfg,
    )


def write_model_dir(models: TrainModels, dst: Path, resolution: int | None = None) -> None:
    """``DIR/model``: frozen components with parameters, the U-Net config only (atomic).

    ``resolution`` (the training images' side) is recorded as diffusers does, as the U-Net config's
    ``sample_size`` in latent pixels: ``edit`` and the app then work at the size the model learned."""
    from rewardedit_jax.convert import clip_text, unet, vae
    from rewardedit_jax.convert.weights import atomic_directory, write_json

    unet_config = unet.diffusers_config_for(models.unet, models.unet_config)
    if resolution:
        unet_config["sample_size"] = resolution // models.vae.config.downsample_factor
    with atomic_directory(dst, overwrite=True) as tmp:
        model_dir_lib.write_component_config(tmp / "unet", unet_config, unet.reward_extra(models.unet))
        vae.save_flax_vae(models.vae, tmp / "vae", models.vae_config)
        clip_text.save_flax_text_encoder(
            models.text_encoder, tmp / "text_encoder", models.text_encoder_config
        )
        models.tokenizer.backend.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "scheduler").mkdir()
        write_json(tmp / "scheduler" / "scheduler_config.json", models.scheduler_config)
        model_dir_lib.write_manifest(
            tmp, ["unet", "vae", "text_encoder", "tokenizer", "scheduler"], layout="pipeline"
        )


# --- the run ----------------------------------------------------------------------------------------------


class _Preemption:
    """SIGTERM (preemption) sets a flag; the loop saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_host(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))


def _data_dir(config) -> str | None:
    """`config.data.data_dir`, else $TFDS_DATA_DIR, else None (TFDS's default)."""
    return config.data.data_dir or os.environ.get("TFDS_DATA_DIR") or None


def _data_iterator(config, tokenizer, seed: int):
    from rewardedit_jax.data import pipeline as data_pipeline

    options = data_pipeline.DataOptions.from_config(config, seed)
    if config.data.latent_cache:
        from rewardedit_jax.data.latent_cache import make_latent_dataset

        return make_latent_dataset(config.data.latent_cache, options, flip=config.data.flip)
    return data_pipeline.make_dataset(
        config.data.name,
        config.data.split,
        options,
        data_dir=_data_dir(config),
        resolution=config.data.resolution,
        tokenizer=tokenizer,
        fast_jpeg=config.data.fast_jpeg,
        flip=config.data.flip,
    )


def check_dataset(config) -> None:
    """Fail early, with one line, when the dataset (or an evaluator's benchmark) is not built."""
    evals_lib.check_eval_data(config)
    if config.data.latent_cache:
        info_file = to_path(config.data.latent_cache) / "cache_info.json"
        if not info_file.is_file():
            raise ConfigError(f"config.data.latent_cache: {config.data.latent_cache} is not a latent cache")
        if config.data.flip and not read_json(info_file).get("flips", True):
            raise ConfigError(
                f"config.data.latent_cache: {config.data.latent_cache} was built without flips (--no-flips); "
                "set config.data.flip=False or build the cache with flips"
            )
        return
    from rewardedit_jax.data import pipeline as data_pipeline

    data_dir = _data_dir(config)
    try:
        data_pipeline.load_data_source(config.data.name, config.data.split, data_dir)
    except Exception as e:
        raise ConfigError(
            f"config.data.name: cannot open {config.data.name!r} split {config.data.split!r} in "
            f"{data_dir or 'the default TFDS data_dir'} ({' '.join(str(e).split())[:200]}); "
            "build it with tfds build"
        ) from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train per ``config`` in ``workdir`` (resuming if it holds a checkpoint).

    Returns the last logged metrics, ``step``, ``compile_s`` and the final train ``state`` (global arrays).
    """
    workdir = checkpoint_dir(workdir)  # absolute; local or gs:// (Orbax), in a bucket that exists
    check_config(config, jax.devices())
    check_dataset(config)
    mesh = shard_lib.make_mesh(dict(config.mesh))
    mesh_plan = shard_lib.plan_mesh(dict(config.mesh), jax.devices())
    is_main = jax.process_index() == 0
    models = build_models(config, workdir)
    # What the model learns (prediction type, noise schedule), so samplers and exports must know it.
    models.scheduler_config = dict(models.scheduler_config, **scheduler_overrides(config))
    if is_main:
        makedirs(workdir)
        if not model_dir_lib.is_model_dir(workdir / workdir_lib.MODEL):
            write_model_dir(models, workdir / workdir_lib.MODEL, config.data.resolution)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("rewardedit_jax.model_dir")

    schedule = NoiseSchedule.from_scheduler_config(models.scheduler_config)
    latent = bool(config.data.latent_cache)
    components = builder.Components(models.unet, models.vae, models.text_encoder)
    train_step = builder.build_train_step(config, mesh, components, schedule=schedule, latent=latent)
    empty_embeds = models.text_encoder(jnp.asarray(models.tokenizer([""])))[0][0]
    unet_rngs = nnx.split(models.unet, nnx.Param, ...)[2]
    frozen = train_step.place_frozen(
        {
            "vae": nnx.state(models.vae),
            "text_encoder": nnx.state(models.text_encoder),
            "empty_embeds": empty_embeds,
            "unet_rngs": unet_rngs,
        }
    )
    state = train_step.init_state(nnx.state(models.unet, nnx.Param), config.seed)
    state_sh = train_step.state_shardings
    if is_main:
        log.info("%s; %s", mesh_plan.describe(), builder.describe_batch(config, mesh))

    data = _data_iterator(config, models.tokenizer, config.seed)
    manager = checkpoints_lib.open_manager(workdir / workdir_lib.CHECKPOINTS, config)
    target = workdir_lib.flatten_state(builder.with_shardings(state, state_sh))
    start, restored = checkpoints_lib.restore_newest(manager, target, data)
    if restored is not None:
        state = workdir_lib.unflatten_state(state, restored)
    start = int(start or 0)
    if train_step.layout != "default":
        state = shard_lib.relayout(state, train_step.state_formats)
        if is_main:
            log.info(
                "train state layout: %s (4-D kernels (O, H, W, I)-major in device memory)", train_step.layout
            )

    log_order = config.log_data_order and is_main
    order_file = workdir_lib.DataOrderLog(workdir, start, config.total_steps) if log_order else None

    def next_batch():
        local = next(data)
        if order_file is not None:
            order_file.write(json.dumps([int(i) for i in np.asarray(local["record_index"]).ravel()]) + "\n")
            order_file.flush()
        train_step.check_batch(local)
        return train_step.place_batch(local)

    # Before compiling: a W&B run that cannot start (no login, no network) fails in seconds, not minutes.
    writer = MetricsWriter(
        workdir, enabled=is_main, wandb=_wandb_settings(config), run_config=config.to_dict()
    )
    finished = False
    try:
        batch = next_batch()
        t0 = time.perf_counter()
        compiled = train_step.compile()
        compile_s = time.perf_counter() - t0
        flops = _flops(compiled)
        if is_main:
            log.info(
                "compiled the train step in %.1fs (%.3g TFLOP per step per device)", compile_s, flops / 1e12
            )

        evaluations = evals_lib.TrainingEvals(config, workdir, config.total_steps)
        last, pending, window_start, window_steps = {}, None, time.perf_counter(), 0
        step = start
        bar = _progress_bar(start, config.total_steps) if is_main else None
        with _Preemption() as preemption, contextlib.closing(bar or _NoBar()):
            while step < config.total_steps:
                state, metrics = compiled(state, batch, frozen)
                step += 1
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                if pending is not None:
                    _check_finite(*pending)
                pending = (step, metrics)
                log_now = step % config.log_every_steps == 0 or step == config.total_steps
                save_now = step % config.checkpoint_every_steps == 0 or step == config.total_steps
                stop = preemption.any_host()
                if log_now or save_now or stop:
                    _check_finite(*pending)
                    pending = None
                if log_now:
                    jax.block_until_ready(metrics)
                    elapsed = time.perf_counter() - window_start
                    step_time = elapsed / max(window_steps, 1)
                    last = {
                        "learning/loss": float(metrics["loss"]),
                        "learning/lr": float(metrics["lr"]),
                        "learning/grad_norm": float(metrics["grad_norm"]),
                        "perf/step_time_s": step_time,
                        "perf/images_per_s": config.batch_size / step_time,
                        "perf/tflops_per_device": flops / step_time / 1e12,
                    }
                    writer.write(step, last)
                    if bar is not None:
                        loss, speed = last["learning/loss"], last["perf/images_per_s"]
                        bar.set_postfix_str(f"loss {loss:.4f}  {speed:.2f} img/s", refresh=False)
                    elif is_main:
                        eta = (config.total_steps - step) * step_time
                        log.info(
                            "step %d/%d  loss %.4f  lr %.2e  %.2f img/s  ETA %s",
                            step,
                            config.total_steps,
                            last["learning/loss"],
                            last["learning/lr"],
                            last["perf/images_per_s"],
                            _hms(eta),
                        )
                    window_start, window_steps = time.perf_counter(), 0
                if save_now or stop:
                    checkpoints_lib.save(manager, step, workdir_lib.flatten_state(state), data)
                if stop:
                    log.warning("SIGTERM: saved a checkpoint at step %d and stopped", step)
                    break
                if evaluations:
                    # Not counted in the next logged step time.
                    window_start += evaluations.run(step, state, writer)
                if step < config.total_steps:
                    batch = next_batch()
        finished = True
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close(exit_code=0 if finished else 1)
        if order_file is not None:
            order_file.close()
    return {"step": step, **last, "compile_s": compile_s, "state": state}


def _progress_bar(start: int, total: int):
    """A progress bar (steps, loss, images/s, time left) when stderr is a terminal; None otherwise, and the
    progress goes to log lines every ``log_every_steps``."""
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", desc="training", dynamic_ncols=True, file=sys.stderr)


class _NoBar:
    def close(self) -> None:
        pass


def _check_finite(step: int, metrics: dict) -> None:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
        raise TrainingError(f"loss is {loss} at step {step}; stopping (the last good checkpoint is kept)")


def _flops(compiled) -> float:
    try:
        analysis = compiled.cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        return float(analysis.get("flops", 0.0))
    except Exception:  # not every backend reports costs
        return 0.0


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def compile_abstract(config: ml_collections.ConfigDict, *, mesh=None):
    """Lower and compile the train step from abstract shapes only (no weights, no data).

    Uses the architecture in ``config.model.*`` and the batch shapes the config implies, so the real
    configuration is known to be consistent before any expensive setup. Returns the compiled step.
    """
    check_config(config, list(mesh.devices.flat) if mesh is not None else jax.devices())
    return builder.abstract_train_step(config, mesh or shard_lib.make_mesh(dict(config.mesh))).compile()
