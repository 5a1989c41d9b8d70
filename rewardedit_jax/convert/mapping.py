"""Mechanical mapping between Flax NNX parameter trees and PyTorch state dicts.

A Flax parameter path (``down_blocks.0.resnets.1.conv1.kernel``) becomes a PyTorch key by a list of
component-specific regex renames on the module path, plus the leaf rule ``kernel``/``scale``/
``embedding`` -> ``weight``. Tensors change layout by rank: conv kernels (kh, kw, in, out) <->
(out, in, kh, kw), dense kernels (in, out) <-> (out, in); embeddings and vectors are unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardedit_jax.convert.weights import ConversionError, WeightReader
from rewardedit_jax.models.layers import UnsupportedConfigError, materialize_rng_state

Rename = Sequence[tuple[str, str]]
T = TypeVar("T")
_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def torch_key(path: tuple, renames: Rename = ()) -> str:
    *module, leaf = (str(p) for p in path)
    name = ".".join(module)
    for pattern, repl in renames:
        name = re.sub(pattern, repl, name)
    if leaf not in _LEAF:
        raise ConversionError(f"parameter {'.'.join(map(str, path))} has no PyTorch counterpart")
    return f"{name}.{_LEAF[leaf]}" if name else _LEAF[leaf]


# Flax -> PyTorch axis order of a kernel, by rank: conv (kh, kw, in, out) -> (out, in, kh, kw), dense
# (in, out) -> (out, in). Other leaves keep their layout.
_TORCH_KERNEL_AXES = {4: (3, 2, 0, 1), 2: (1, 0)}


def to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    axes = _TORCH_KERNEL_AXES.get(array.ndim) if leaf == "kernel" else None
    return array if axes is None else array.transpose(axes)


def to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    axes = _TORCH_KERNEL_AXES.get(array.ndim) if leaf == "kernel" else None
    return array if axes is None else array.transpose(np.argsort(axes))


def _param_items(model: nnx.Module) -> list[tuple[tuple, nnx.Variable]]:
    return list(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def load_into(
    model: nnx.Module,
    reader: WeightReader,
    *,
    renames: Rename = (),
    source: str = "weights",
    ignore: Callable[[str], bool] = lambda key: False,
    adapt: Callable[[str, np.ndarray, tuple], np.ndarray] | None = None,
) -> None:
    """Fill the parameters of ``model`` (concrete or abstract) from ``reader``, tensor by tensor.

    Every parameter must be found with the right shape, and every tensor of the reader must be used
    (except keys for which ``ignore`` is true); otherwise a one-line :class:`ConversionError`.
    ``adapt(key, array, target_shape)`` may reshape a tensor (e.g. expand ``conv_in``) before the check.
    """
    items = _param_items(model)
    wanted = {torch_key(path, renames): (path, var) for path, var in items}
    missing = [k for k in wanted if k not in reader]
    unexpected = [k for k in reader.keys() if k not in wanted and not ignore(k)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        raise ConversionError(f"{source}: {'; '.join(parts)}")
    for key, (path, var) in wanted.items():
        target = var.get_value()
        array = to_flax_layout(str(path[-1]), reader.get(key))
        if adapt is not None:
            array = adapt(key, array, tuple(target.shape))
        if tuple(array.shape) != tuple(target.shape):
            expected = tuple(to_torch_layout(str(path[-1]), np.empty(target.shape)).shape)
            found = tuple(reader.shape(key))
            raise ConversionError(
                f"{source}: tensor {key!r} has shape {found}, the model config expects {expected}"
            )
        var.set_value(jnp.asarray(array, dtype=target.dtype))


def export_state(model: nnx.Module, *, renames: Rename = ()) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(torch_key, array)`` for every parameter of ``model``, in PyTorch layout, float32."""
    for path, var in _param_items(model):
        array = np.asarray(jax.device_get(var.get_value()), dtype=np.float32)
        yield torch_key(path, renames), to_torch_layout(str(path[-1]), array)


def parsed_config(parse: Callable[[], T], source: str | os.PathLike) -> T:
    """``parse()`` (a model config from a config.json), its :class:`UnsupportedConfigError` turned into a
    one-line :class:`ConversionError` naming ``source``."""
    try:
        return parse()
    except UnsupportedConfigError as e:
        raise ConversionError(f"{source}: {e}") from None


def finish_loaded(model: nnx.Module, param_dtype=None) -> nnx.Module:
    """Complete a model whose parameters were loaded into ``nnx.eval_shape`` structure: concrete RNG
    state, and parameters cast to ``param_dtype`` if given."""
    materialize_rng_state(model)
    if param_dtype is not None:
        for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            var.set_value(var.get_value().astype(param_dtype))
    return model
