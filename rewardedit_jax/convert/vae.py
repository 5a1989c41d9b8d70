"""VAE conversion: diffusers ``vae/`` folder (``AutoencoderKL``) <-> Flax :class:`AutoencoderKL`.

Flax parameter paths equal diffusers' state-dict names, so the mapping needs no renames. Checkpoints in
diffusers' deprecated attention layout (mid-block ``query``/``key``/``value``/``proj_attn``) are read as
well; exports always use the current names (``to_q``/``to_k``/``to_v``/``to_out.0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardedit_jax.convert import model_dir
from rewardedit_jax.convert.mapping import (
    export_state,
    finish_loaded,
    load_into,
    parsed_config,
)
from rewardedit_jax.convert.weights import (
    DIFFUSERS_STEM,
    WeightReader,
    open_weights,
    read_json,
    save_weights_folder,
)
from rewardedit_jax.io import to_path
from rewardedit_jax.models.layers import build_model
from rewardedit_jax.models.vae import (
    IDENTITY_CLASS,
    AutoencoderKL,
    IdentityAutoencoder,
    IdentityConfig,
    VAEConfig,
    is_identity_config,
)

CLASS_NAME = "AutoencoderKL"
RENAMES = ()
LEGACY_ATTENTION_RENAMES = (
    (r"(mid_block\.attentions\.\d+)\.to_q$", r"\1.query"),
    (r"(mid_block\.attentions\.\d+)\.to_k$", r"\1.key"),
    (r"(mid_block\.attentions\.\d+)\.to_v$", r"\1.value"),
    (r"(mid_block\.attentions\.\d+)\.to_out\.0$", r"\1.proj_attn"),
)


def vae_config(config: Mapping[str, Any], source: Path) -> VAEConfig:
    return parsed_config(lambda: VAEConfig.from_diffusers(config), source)


def build_abstract(cfg: VAEConfig, compute_dtype=None) -> AutoencoderKL:
    return build_model(AutoencoderKL, cfg, dtype=compute_dtype, abstract=True)


def _renames_for(reader: WeightReader):
    legacy = any(".mid_block.attentions." in k and ".proj_attn." in k for k in reader.keys())
    return LEGACY_ATTENTION_RENAMES if legacy else RENAMES


def load_diffusers_vae(folder: Path, *, param_dtype=None, compute_dtype=None) -> tuple[AutoencoderKL, dict]:
    """Load a diffusers ``vae/`` folder (config.json + weights). Returns the model and its config dict."""
    folder = to_path(folder)
    config = read_json(folder / "config.json")
    if is_identity_config(config):
        return _identity(config, compute_dtype), config
    cfg = vae_config(config, folder / "config.json")
    with open_weights(folder, (DIFFUSERS_STEM,)) as reader:
        model = build_abstract(cfg, compute_dtype)
        load_into(model, reader, renames=_renames_for(reader), source=str(folder))
    return finish_loaded(model, param_dtype), config


def _identity(config: Mapping[str, Any], compute_dtype) -> IdentityAutoencoder:
    return IdentityAutoencoder(IdentityConfig(int(config.get("in_channels", 3))), dtype=compute_dtype)


def diffusers_config_for(model: AutoencoderKL, base: Mapping[str, Any] | None) -> dict:
    """The diffusers config.json for ``model``: ``base`` (the imported one) updated to the model."""
    if isinstance(model, IdentityAutoencoder):
        c = model.config.in_channels
        return {
            "_class_name": IDENTITY_CLASS,
            "in_channels": c,
            "latent_channels": c,
            "block_out_channels": [c],
            "scaling_factor": 1.0,
        }
    cfg = model.config
    n = len(cfg.block_out_channels)
    config = dict(base or {})
    config.update(
        {
            "_class_name": CLASS_NAME,
            "in_channels": cfg.in_channels,
            "out_channels": cfg.out_channels,
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(cfg.block_out_channels),
            "layers_per_block": cfg.layers_per_block,
            "act_fn": config.get("act_fn", "silu"),
            "latent_channels": cfg.latent_channels,
            "norm_num_groups": cfg.norm_num_groups,
            "scaling_factor": cfg.scaling_factor,
            "use_quant_conv": cfg.use_quant_conv,
            "use_post_quant_conv": cfg.use_post_quant_conv,
            "mid_block_add_attention": cfg.mid_block_add_attention,
        }
    )
    return config


def save_diffusers_vae(model: AutoencoderKL, dst: Path, config: Mapping[str, Any] | None) -> None:
    """Write ``dst/config.json`` and ``dst/diffusion_pytorch_model.safetensors`` (float32)."""
    tensors = {} if isinstance(model, IdentityAutoencoder) else dict(export_state(model, renames=RENAMES))
    config = diffusers_config_for(model, config)
    save_weights_folder(dst, f"{DIFFUSERS_STEM}.safetensors", tensors, config, {"format": "pt"})


def save_flax_vae(model: AutoencoderKL, component_dir: Path, config: Mapping[str, Any] | None) -> None:
    model_dir.write_component_config(component_dir, diffusers_config_for(model, config))
    if not isinstance(model, IdentityAutoencoder):
        model_dir.save_params(component_dir, model)


def load_flax_vae(component_dir: Path, *, param_dtype=None, compute_dtype=None) -> tuple[AutoencoderKL, dict]:
    config, _ = model_dir.component_config(component_dir)
    if is_identity_config(config):
        return _identity(config, compute_dtype), config
    cfg = vae_config(config, to_path(component_dir) / "config.json")
    model = build_abstract(cfg, compute_dtype)
    model_dir.restore_params(component_dir, model)
    return finish_loaded(model, param_dtype), config
