"""Text encoder conversion: transformers ``text_encoder/`` folder (``CLIPTextModel``) <-> Flax
:class:`CLIPTextModel`.

Reads both state-dict layouts: the classic one with keys under ``text_model.`` (transformers 4.x, every
Stable Diffusion checkpoint) and transformers 5's unprefixed one. Exports use the classic layout, which
both transformers 4.x and 5.x load into ``CLIPTextModel`` without missing or unexpected keys.
Non-parameter buffers (``position_ids``) in older checkpoints are ignored.
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
    TRANSFORMERS_STEMS,
    WeightReader,
    open_weights,
    read_json,
    save_weights_folder,
)
from rewardedit_jax.io import to_path
from rewardedit_jax.models.clip_text import CLIPTextModel, TextEncoderConfig
from rewardedit_jax.models.layers import build_model

ARCHITECTURE = "CLIPTextModel"
MODEL_TYPE = "clip_text_model"
PREFIX = "text_model."
PREFIXED_RENAMES = ((r"^", PREFIX),)
WEIGHTS_FILE = "model.safetensors"


def _is_buffer(key: str) -> bool:
    return key.endswith("embeddings.position_ids")


def text_encoder_config(config: Mapping[str, Any], source: Path) -> TextEncoderConfig:
    return parsed_config(lambda: TextEncoderConfig.from_transformers(config), source)


def build_abstract(cfg: TextEncoderConfig, compute_dtype=None) -> CLIPTextModel:
    return build_model(CLIPTextModel, cfg, dtype=compute_dtype, abstract=True)


def _renames_for(reader: WeightReader):
    return PREFIXED_RENAMES if any(k.startswith(PREFIX) for k in reader.keys()) else ()


def load_diffusers_text_encoder(
    folder: Path, *, param_dtype=None, compute_dtype=None
) -> tuple[CLIPTextModel, dict]:
    """Load a transformers ``text_encoder/`` folder (config.json + weights). Returns the model and config."""
    folder = to_path(folder)
    config = read_json(folder / "config.json")
    cfg = text_encoder_config(config, folder / "config.json")
    with open_weights(folder, TRANSFORMERS_STEMS) as reader:
        model = build_abstract(cfg, compute_dtype)
        load_into(model, reader, renames=_renames_for(reader), source=str(folder), ignore=_is_buffer)
    return finish_loaded(model, param_dtype), config


def transformers_config_for(model: CLIPTextModel, base: Mapping[str, Any] | None) -> dict:
    """The transformers config.json for ``model``: ``base`` (the imported one) updated to the model."""
    cfg = model.config
    config = dict(base or {})
    config.update(
        {
            "architectures": [ARCHITECTURE],
            "model_type": MODEL_TYPE,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "max_position_embeddings": cfg.max_position_embeddings,
            "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps,
            "eos_token_id": cfg.eos_token_id,
        }
    )
    for key in ("torch_dtype", "dtype"):  # the exported weights are float32
        if key in config:
            config[key] = "float32"
    return config


def save_diffusers_text_encoder(model: CLIPTextModel, dst: Path, config: Mapping[str, Any] | None) -> None:
    """Write ``dst/config.json`` and ``dst/model.safetensors`` (float32, keys under ``text_model.``)."""
    tensors = dict(export_state(model, renames=PREFIXED_RENAMES))
    save_weights_folder(dst, WEIGHTS_FILE, tensors, transformers_config_for(model, config), {"format": "pt"})


def save_flax_text_encoder(
    model: CLIPTextModel, component_dir: Path, config: Mapping[str, Any] | None
) -> None:
    model_dir.write_component_config(component_dir, transformers_config_for(model, config))
    model_dir.save_params(component_dir, model)


def load_flax_text_encoder(
    component_dir: Path, *, param_dtype=None, compute_dtype=None
) -> tuple[CLIPTextModel, dict]:
    config, _ = model_dir.component_config(component_dir)
    cfg = text_encoder_config(config, to_path(component_dir) / "config.json")
    model = build_abstract(cfg, compute_dtype)
    model_dir.restore_params(component_dir, model)
    return finish_loaded(model, param_dtype), config
