"""U-Net conversion: diffusers folder <-> Flax model, stock SD/IP2P and the official reward layout.

The reward variant is recognized by its weights (``add_embedding2.*``, ``text_linear*``, ``proj_deal.*``,
``ca.*``), so official Reward-InsPix2Pix checkpoints load as they are, whatever their config says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardedit_jax.convert import model_dir
from rewardedit_jax.convert.mapping import (
    export_state,
    finish_loaded,
    load_into,
    parsed_config,
)
from rewardedit_jax.convert.weights import (
    DIFFUSERS_STEM,
    ConversionError,
    WeightReader,
    open_weights,
    read_json,
    save_weights_folder,
)
from rewardedit_jax.io import to_path
from rewardedit_jax.models.layers import build_model
from rewardedit_jax.models.reward import RewardConfig
from rewardedit_jax.models.unet import UNet2DConditionModel, UNetConfig

RENAMES = (
    (r"^reward\.", ""),
    (r"^ca\.attention\.self_attn", "ca.attention.self"),
    (r"^(ca\..*)\.layer_norm$", r"\1.LayerNorm"),
)
REWARD_PREFIXES = ("add_embedding.", "add_embedding2.", "text_linear.", "text_linear2.", "proj_deal.", "ca.")
STOCK_CLASS = "UNet2DConditionModel"
REWARD_CLASS = "RewardUNet2DConditionModel"


def reward_config_from_weights(reader: WeightReader, config: Mapping[str, Any]) -> RewardConfig | None:
    """The reward modules' config if the weights contain them (``None`` for a stock U-Net)."""
    present = {p for p in REWARD_PREFIXES if any(k.startswith(p) for k in reader.keys())}
    if not present:
        return None
    if present != set(REWARD_PREFIXES):
        absent = sorted(p.rstrip(".") for p in set(REWARD_PREFIXES) - present)
        raise ConversionError(
            f"{reader.files[0]}: incomplete reward modules (no {', '.join(absent)} weights)"
        )
    fields = {}
    if "reward_num_heads" in config:
        fields["num_heads"] = int(config["reward_num_heads"])
    in_features = reader.shape("add_embedding.linear_1.weight")[1]
    if in_features % 3:
        raise ConversionError(
            f"{reader.files[0]}: add_embedding input width {in_features} is not 3 x score width"
        )
    fields["score_embed_dim"] = in_features // 3
    return RewardConfig(**fields)


def unet_config(config: Mapping[str, Any], source: Path, reward: RewardConfig | None) -> UNetConfig:
    return parsed_config(lambda: UNetConfig.from_diffusers(config, reward=reward), source)


def build_abstract(cfg: UNetConfig, compute_dtype=None) -> UNet2DConditionModel:
    return build_model(UNet2DConditionModel, cfg, dtype=compute_dtype, abstract=True)


def load_diffusers_unet(
    folder: Path, *, param_dtype=None, compute_dtype=None, in_channels: int | None = None
) -> tuple[UNet2DConditionModel, dict]:
    """Load a diffusers ``unet/`` folder (config.json + weights). Returns the model and its config dict.

    ``in_channels`` larger than the checkpoint's expands ``conv_in`` with zero-filled input channels
    (stage-1 initialization of InstructPix2Pix from SD: 4 -> 8).
    """
    folder = to_path(folder)
    config = read_json(folder / "config.json")
    with open_weights(folder, (DIFFUSERS_STEM,)) as reader:
        reward = reward_config_from_weights(reader, config)
        adapt = None
        if in_channels is not None and in_channels != config.get("in_channels", 4):
            old = int(config.get("in_channels", 4))
            if in_channels < old:
                raise ConversionError(f"{folder}: cannot shrink conv_in from {old} to {in_channels} channels")
            config = {**config, "in_channels": in_channels}
            adapt = _expand_conv_in
        cfg = unet_config(config, folder / "config.json", reward)
        model = build_abstract(cfg, compute_dtype)
        load_into(model, reader, renames=RENAMES, source=str(folder), adapt=adapt)
    return finish_loaded(model, param_dtype), config


def _expand_conv_in(key: str, array: np.ndarray, target_shape: tuple) -> np.ndarray:
    if key != "conv_in.weight" or array.shape == target_shape:
        return array
    extra = target_shape[2] - array.shape[2]
    pad = np.zeros(array.shape[:2] + (extra,) + array.shape[3:], dtype=array.dtype)
    return np.concatenate([array, pad], axis=2)


def expand_input_channels(model: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """A copy of ``model`` whose ``conv_in`` takes ``in_channels`` inputs, the extra ones zero-initialized."""
    cfg = model.config
    if in_channels < cfg.in_channels:
        raise ValueError(f"cannot shrink conv_in from {cfg.in_channels} to {in_channels} channels")
    new = build_abstract(dataclasses.replace(cfg, in_channels=in_channels), model.dtype)
    new_vars = dict(nnx.to_flat_state(nnx.state(new, nnx.Param)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        if path == ("conv_in", "kernel"):
            value = jnp.asarray(
                _expand_conv_in("conv_in.weight", np.asarray(value), new_vars[path].get_value().shape)
            )
        new_vars[path].set_value(value)
    return finish_loaded(new, None)


def add_reward_conditioning(
    model: UNet2DConditionModel, reward: RewardConfig | None = None, *, seed: int = 0
) -> UNet2DConditionModel:
    """A copy of a stock U-Net with freshly initialized reward modules (stage-2 initialization)."""
    if model.has_reward:
        raise ValueError("the U-Net already has reward conditioning")
    cfg = dataclasses.replace(model.config, reward=reward or RewardConfig())
    new = UNet2DConditionModel(cfg, rngs=nnx.Rngs(seed), dtype=model.dtype)
    new_vars = dict(nnx.to_flat_state(nnx.state(new, nnx.Param)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        new_vars[path].set_value(var.get_value())
    return new


def diffusers_config_for(model: UNet2DConditionModel, base: Mapping[str, Any] | None) -> dict:
    """The diffusers config.json for ``model``: ``base`` (the imported one) updated to the model."""
    cfg = model.config
    config = dict(base or {})
    config.update(
        {
            "in_channels": cfg.in_channels,
            "out_channels": cfg.out_channels,
            "block_out_channels": list(cfg.block_out_channels),
            "down_block_types": list(cfg.down_block_types),
            "up_block_types": list(cfg.up_block_types),
            "cross_attention_dim": cfg.cross_attention_dim[0]
            if len(set(cfg.cross_attention_dim)) == 1
            else list(cfg.cross_attention_dim),
            "use_linear_projection": cfg.use_linear_projection,
            "upcast_attention": cfg.upcast_attention,
            "norm_num_groups": cfg.norm_num_groups,
            "norm_eps": cfg.norm_eps,
            "flip_sin_to_cos": cfg.flip_sin_to_cos,
            "freq_shift": cfg.freq_shift if cfg.freq_shift != int(cfg.freq_shift) else int(cfg.freq_shift),
        }
    )
    if base is None:
        heads = cfg.num_attention_heads
        config["attention_head_dim"] = heads[0] if len(set(heads)) == 1 else list(heads)
        lpb = cfg.layers_per_block
        config["layers_per_block"] = lpb[0] if len(set(lpb)) == 1 else list(lpb)
    config["_class_name"] = REWARD_CLASS if model.has_reward else config.get("_class_name", STOCK_CLASS)
    if model.has_reward:
        config["reward_score_embed_dim"] = cfg.reward.score_embed_dim
        config["reward_num_heads"] = cfg.reward.num_heads
    else:
        for key in ("reward_score_embed_dim", "reward_num_heads"):
            config.pop(key, None)
        if config["_class_name"] == REWARD_CLASS:
            config["_class_name"] = STOCK_CLASS
    return config


def save_diffusers_unet(model: UNet2DConditionModel, dst: Path, config: Mapping[str, Any] | None) -> None:
    """Write ``dst/config.json`` and ``dst/diffusion_pytorch_model.safetensors``."""
    tensors = dict(export_state(model, renames=RENAMES))
    save_weights_folder(dst, f"{DIFFUSERS_STEM}.safetensors", tensors, diffusers_config_for(model, config))


def reward_extra(model: UNet2DConditionModel) -> dict:
    return {"reward": dataclasses.asdict(model.config.reward)} if model.has_reward else {}


def save_flax_unet(
    model: UNet2DConditionModel, component_dir: Path, config: Mapping[str, Any] | None
) -> None:
    model_dir.write_component_config(component_dir, diffusers_config_for(model, config), reward_extra(model))
    model_dir.save_params(component_dir, model)


def load_flax_unet(
    component_dir: Path, *, param_dtype=None, compute_dtype=None
) -> tuple[UNet2DConditionModel, dict]:
    config, extra = model_dir.component_config(component_dir)
    reward = RewardConfig(**extra["reward"]) if extra.get("reward") else None
    cfg = unet_config(config, to_path(component_dir) / "config.json", reward)
    model = build_abstract(cfg, compute_dtype)
    model_dir.restore_params(component_dir, model)
    return finish_loaded(model, param_dtype), config
