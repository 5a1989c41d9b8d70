"""The Flax model directory: Orbax checkpoints of parameters plus the configs needed to rebuild them.

Layout (``DST`` written atomically by ``convert import``)::

    DST/rewardedit_model.json        {"format": "rewardedit-jax-model", "version": 1, "components": [...]}
    DST/<component>/config.json      the component's diffusers/transformers config, verbatim
    DST/<component>/rewardedit.json  what the config does not say (e.g. the reward modules), optional
    DST/<component>/params/          Orbax checkpoint: flat {"dotted.param.path": array}

Any folder other commands accept as a model may be a diffusers folder or such a directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from rewardedit_jax import io
from rewardedit_jax.convert.weights import ConversionError, read_json, write_json

MODEL_FILE = "rewardedit_model.json"
FORMAT = "rewardedit-jax-model"
VERSION = 1


def is_model_dir(path: str | os.PathLike) -> bool:
    return (io.to_path(path) / MODEL_FILE).is_file()


def folder_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of the model folder ``path`` if it is a Flax model directory, else None (a diffusers
    folder); a one-line :class:`ConversionError` when ``path`` is no folder."""
    folder = io.to_path(path)
    if not folder.exists():
        raise ConversionError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a folder")
    return read_manifest(folder) if is_model_dir(folder) else None


def read_manifest(path: str | os.PathLike) -> dict:
    manifest_path = io.to_path(path) / MODEL_FILE
    manifest = read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise ConversionError(f"{manifest_path}: not a {FORMAT} manifest")
    if manifest.get("version", 0) > VERSION:
        raise ConversionError(
            f"{manifest_path}: format version {manifest['version']} is newer than this package"
        )
    return manifest


def write_manifest(
    path: str | os.PathLike, components: list[str], source: str | None = None, layout: str = "pipeline"
) -> None:
    """``layout``: ``pipeline`` (exports as a whole diffusers folder) or ``component`` (a single unet/)."""
    data = {"format": FORMAT, "version": VERSION, "components": sorted(components), "layout": layout}
    if source:
        data["source"] = source
    write_json(io.to_path(path) / MODEL_FILE, data)


def _flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _local_checkpointer():
    """A checkpointer that involves only this process (model directories are written by one host and
    read by each host on its own, unlike training checkpoints, which all hosts write together)."""
    import orbax.checkpoint as ocp

    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    me = jax.process_index()
    options = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"model_dir_{me}"
    )
    return ocp.StandardCheckpointer(multiprocessing_options=options)


def _params_dir(component_dir: str | os.PathLike):
    try:
        return io.checkpoint_dir(component_dir) / "params"
    except io.PathError as e:
        raise ConversionError(str(e)) from None


def save_params(component_dir: str | os.PathLike, model: nnx.Module) -> None:
    with _local_checkpointer() as ckptr:  # numpy arrays: host-local, writable by one process of many
        ckptr.save(_params_dir(component_dir), numpy_params(model))
        ckptr.wait_until_finished()


def restore_params(component_dir: str | os.PathLike, model: nnx.Module) -> None:
    """Restore an Orbax parameter checkpoint into ``model`` (abstract or concrete), checking shapes."""
    params_dir = _params_dir(component_dir)
    if not params_dir.is_dir():
        raise ConversionError(f"{params_dir}: parameter checkpoint not found")
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=getattr(v, "sharding", None) or local)
        for k, v in _flat_params(model).items()
    }
    with _local_checkpointer() as ckptr:
        try:
            stored = ckptr.metadata(params_dir)
            stored_tree = getattr(stored, "item_metadata", stored)
            stored_tree = getattr(stored_tree, "tree", stored_tree)
            stored_shapes = {k: tuple(m.shape) for k, m in dict(stored_tree).items()}
        except Exception as e:
            raise ConversionError(f"{params_dir}: unreadable checkpoint ({e})") from None
        missing = sorted(set(target) - set(stored_shapes))
        unexpected = sorted(set(stored_shapes) - set(target))
        if missing or unexpected:
            raise ConversionError(
                f"{params_dir}: checkpoint does not match the config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for k, shape in stored_shapes.items():
            if shape != tuple(target[k].shape):
                raise ConversionError(
                    f"{params_dir}: parameter {k} has shape {shape}, "
                    f"the config expects {tuple(target[k].shape)}"
                )
        try:
            restored = ckptr.restore(params_dir, target)
        except Exception as e:
            raise ConversionError(
                f"{params_dir}: cannot restore parameters ({' '.join(str(e).split())})"
            ) from None
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        var.set_value(restored[".".join(map(str, path))])


def component_config(component_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(config.json, rewardedit.json or {}) of a component directory."""
    component_dir = io.to_path(component_dir)
    extra_path = component_dir / "rewardedit.json"
    extra = read_json(extra_path) if extra_path.is_file() else {}
    return read_json(component_dir / "config.json"), extra


def write_component_config(
    component_dir: str | os.PathLike, config: Mapping, extra: Mapping | None = None
) -> None:
    component_dir = io.makedirs(component_dir)
    write_json(component_dir / "config.json", dict(config))
    if extra:
        write_json(component_dir / "rewardedit.json", dict(extra))


def numpy_params(model: nnx.Module) -> dict[str, np.ndarray]:
    return {k: np.asarray(jax.device_get(v)) for k, v in _flat_params(model).items()}
