"""Device mesh and parameter shardings from the config (mesh sizes and logical-axis rules).

Mesh axes are ``data``, ``fsdp`` and ``tensor``. The batch is split over ``(data, fsdp)``; each parameter
is sharded by mapping its logical axis names (``rewardedit_jax.models.layers``) through the config's rule
table. A dimension that the mesh axis does not divide stays replicated, so any model shards on any mesh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


class ConfigError(ValueError):
    """A training config that cannot run (one line naming the key)."""


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolve ``{data, fsdp, tensor}`` sizes (one may be -1 = the rest) for ``num_devices`` devices."""
    sizes = [int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES]
    unknown = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
    if len(unknown) > 1:
        raise ConfigError(f"config.mesh: only one axis may be -1, got {unknown}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"config.mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if num_devices % known:
            raise ConfigError(
                f"config.mesh: {num_devices} devices are not divisible by the fixed axes ({known})"
            )
        sizes[MESH_AXES.index(unknown[0])] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(
            f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices; "
            f"{num_devices} available"
        )
    return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    try:
        device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # irregular topologies (CPU, odd slices): plain order
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def logical_to_spec(
    names: Sequence[str | None] | None, shape: Sequence[int], rules: Mapping[str, str | None], mesh: Mesh
) -> PartitionSpec:
    """PartitionSpec for a parameter with logical ``names``; undivisible or repeated axes replicate."""
    if not names:
        return PartitionSpec()
    used, spec = set(), []
    for name, dim in zip(names, shape):
        axis = rules.get(name) if name is not None else None
        if axis is None or axis in used or mesh.shape.get(axis, 1) == 1 or dim % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def param_shardings(state: nnx.State, rules: Mapping[str, str | None], mesh: Mesh) -> nnx.State:
    """An ``nnx.State`` of NamedShardings matching ``state`` (abstract or concrete)."""

    def one(var):
        value = var.get_value()
        names = var.get_metadata().get("out_sharding")
        return var.replace(NamedSharding(mesh, logical_to_spec(names, value.shape, rules, mesh)))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


# --- device layout of the train state ----------------------------------------------------------------

STATE_LAYOUTS = ("auto", "default", "conv_ohwi")
# Memory order of an HWIO-shaped convolution kernel stored (O, H, W, I)-major: cuDNN's filter layout for
# NHWC convolutions (KRSC), in which its weight gradients arrive.
CONV_OHWI = (3, 0, 1, 2)


def resolve_state_layout(name: str, backend: str | None = None) -> str:
    """``config.state_layout`` for this backend: ``auto`` is ``conv_ohwi`` on GPUs, ``default`` elsewhere.

    On a GPU, convolution kernels (and their Adam moments and EMA) kept row-major HWIO make every
    optimizer update transpose the cuDNN weight gradient and copy its result into the donated buffer;
    stored (O, H, W, I)-major they update in place (H100, SD 1.5 at 256 px batch 64: 153.4 -> 133.9 ms per
    step, benchmarks/RESULTS.md). Shapes, checkpoints and exports are the same either way.
    """
    if name not in STATE_LAYOUTS:
        raise ConfigError(f"config.state_layout must be one of {', '.join(STATE_LAYOUTS)}, got {name!r}")
    if name == "auto":
        return "conv_ohwi" if (backend or jax.default_backend()) == "gpu" else "default"
    return name


def state_formats(state_shardings, state, layout: str):
    """The train state's in/out shardings for the resolved ``layout``: ``state_shardings`` unchanged for
    ``default``; for ``conv_ohwi`` every 4-D leaf (convolution kernels, their moments, EMA) gets a
    ``Format`` with the (O, H, W, I)-major layout and its sharding."""
    if layout == "default":
        return state_shardings
    from jax.experimental.layout import Format, Layout

    shardings, treedef = jax.tree.flatten(state_shardings)
    leaves = jax.tree.leaves(state)
    if len(shardings) != len(leaves):
        raise ValueError(f"state_formats: {len(shardings)} shardings for {len(leaves)} state leaves")
    ohwi = Layout(major_to_minor=CONV_OHWI)
    formats = [Format(ohwi, s) if len(x.shape) == 4 else s for s, x in zip(shardings, leaves)]
    return jax.tree.unflatten(treedef, formats)


def relayout(state, formats):
    """``state`` laid out (and sharded) as ``formats`` says. The old arrays are consumed: leaves that keep
    their layout are reused (donated), the others are deleted once copied, so no second copy of the state
    stays alive through references elsewhere."""
    import warnings

    with warnings.catch_warnings():
        # Leaves that change layout cannot reuse their donated buffers; the rest are aliased.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        new = jax.jit(lambda s: s, out_shardings=formats, donate_argnums=0)(state)
    for old_leaf, new_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        if old_leaf is not new_leaf and not old_leaf.is_deleted():
            old_leaf.delete()
    return new
