"""Weight import/export between diffusers (PyTorch) folders and rewardedit-jax Flax models.

Public API (a contract)::

    from rewardedit_jax import convert
    unet = convert.load_unet(path)  # diffusers unet/ or pipeline folder, a Flax model directory, a Hub id
    eps = unet(sample, timesteps, encoder_hidden_states, reward_scores=None, feedback_embeds=None)

The command line is ``python -m rewardedit_jax.convert {import,export,check}``.
"""

from __future__ import annotations

import os

from etils import epath

from rewardedit_jax import hub
from rewardedit_jax.convert import model_dir
from rewardedit_jax.convert.pipeline import Pipeline, load_model_component, load_pipeline, training_source
from rewardedit_jax.convert.unet import add_reward_conditioning, expand_input_channels
from rewardedit_jax.convert.weights import ConversionError
from rewardedit_jax.io import to_path

__all__ = [
    "ConversionError",
    "Pipeline",
    "add_reward_conditioning",
    "expand_input_channels",
    "load_pipeline",
    "load_text_encoder",
    "load_tokenizer",
    "load_unet",
    "load_vae",
    "resolve_component",
    "training_source",
]


def resolve_component(path: str | os.PathLike, component: str) -> tuple[epath.Path, str]:
    """Locate ``component`` (e.g. ``unet``) under ``path``. Returns (folder, ``'flax'`` or ``'diffusers'``).

    ``path`` may be a Flax model directory, a whole diffusers pipeline folder, or the component folder
    itself (diffusers ``unet/`` with config.json + weights, or a Flax component with ``params/``), or a
    Hugging Face Hub id of one (``owner/name[@revision]``, :mod:`rewardedit_jax.hub`).
    """
    path = to_path(hub.local_folder(path))
    manifest = model_dir.folder_manifest(path)
    if manifest is not None:
        if component not in manifest.get("components", []):
            raise ConversionError(f"{path}: the Flax model directory has no {component!r} component")
        return path / component, "flax"
    if (path / component / "config.json").is_file():
        sub = path / component
        return sub, "flax" if (sub / "params").is_dir() else "diffusers"
    if (path / "config.json").is_file():
        return path, "flax" if (path / "params").is_dir() else "diffusers"
    if (path / "model_index.json").is_file():
        raise ConversionError(f"{path}: the pipeline folder has no {component}/ component")
    raise ConversionError(f"{path}: neither a diffusers folder nor a Flax model directory (no config.json)")


def _load(path, component: str, param_dtype, compute_dtype):
    folder, kind = resolve_component(path, component)
    layout = "component"
    return load_model_component(
        folder, component, layout, param_dtype=param_dtype, compute_dtype=compute_dtype
    )[0]


def load_unet(path: str | os.PathLike, *, param_dtype=None, compute_dtype=None):
    """Load a U-Net (stock or reward-conditioned) in inference mode.

    ``path``: a diffusers ``unet/`` or pipeline folder, or a Flax model directory. ``param_dtype`` casts
    the stored parameters (default: as stored); ``compute_dtype`` (e.g. ``jnp.bfloat16``) sets activations.
    """
    return _load(path, "unet", param_dtype, compute_dtype)


def load_vae(path: str | os.PathLike, *, param_dtype=None, compute_dtype=None):
    """Load the VAE of a diffusers ``vae/`` or pipeline folder, or of a Flax model directory."""
    return _load(path, "vae", param_dtype, compute_dtype)


def load_text_encoder(path: str | os.PathLike, *, param_dtype=None, compute_dtype=None):
    """Load the CLIP text encoder of a ``text_encoder/`` or pipeline folder, or of a Flax directory."""
    return _load(path, "text_encoder", param_dtype, compute_dtype)


def load_tokenizer(path: str | os.PathLike):
    """The CLIP tokenizer of a ``tokenizer/`` folder or of a pipeline folder / Flax model directory."""
    from rewardedit_jax.tokenizer import load_tokenizer as _load_tokenizer

    return _load_tokenizer(hub.local_folder(path))
