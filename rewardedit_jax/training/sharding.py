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
