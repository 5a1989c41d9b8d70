"""Device mesh and parameter shardings from the config (mesh sizes and logical-axis rules).

Mesh axes are ``data``, ``fsdp`` and ``tensor``. The batch is split over ``(data, fsdp)``; each parameter
is sharded by mapping its logical axis names (``rewardedit_jax.models.layers``) through the config's rule
table. A dimension that the mesh axis does not divide stays replicated, so any model shards on any mesh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


class ConfigError(ValueError):
    """A training config that cannot run (one line naming the key)."""


DCN_AXES = tuple(f"dcn_{a}" for a in MESH_AXES)


@dataclasses.dataclass(frozen=True)
class MeshPlan:
    """The mesh a config asks for on a set of devices: per-slice (ICI) and across-slice (DCN) sizes.

    ``granules`` are the units joined by the slower network: TPU slices (devices carry ``slice_index``),
    or processes (hosts) when a ``mesh.dcn_*`` size is set above 1 on devices without slices (GPU
    clusters); otherwise all devices form one granule.
    """

    ici: tuple[int, int, int]
    dcn: tuple[int, int, int]
    granule: str  # "slice", "process" or "none"
    num_devices: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(i * d for i, d in zip(self.ici, self.dcn))

    def describe(self) -> str:
        sizes = " ".join(f"{a}={n}" for a, n in zip(MESH_AXES, self.shape))
        text = f"mesh {sizes} over {self.num_devices} devices"
        if self.granule != "none":
            dcn = " ".join(f"{a}={n}" for a, n in zip(MESH_AXES, self.dcn) if n > 1) or "none"
            text += f" ({math.prod(self.dcn)} {self.granule}s; across them: {dcn})"
        return text


def _resolve_sizes(sizes: list[int], names: Sequence[str], total: int, what: str) -> tuple[int, ...]:
    unknown = [n for n, s in zip(names, sizes) if s == -1]
    if len(unknown) > 1:
        raise ConfigError(f"config.mesh: only one of {', '.join(names)} may be -1, got {unknown}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"config.mesh: sizes must be positive or -1, got {dict(zip(names, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if total % known:
            raise ConfigError(f"config.mesh: {total} {what} are not divisible by the fixed axes ({known})")
        sizes = list(sizes)
        sizes[list(names).index(unknown[0])] = total // known
    if math.prod(sizes) != total:
        raise ConfigError(
            f"config.mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} {what}; {total} available"
        )
    return tuple(sizes)


def _granules(devices: Sequence, dcn_requested: bool) -> tuple[str, int]:
    slices = {getattr(d, "slice_index", None) for d in devices}
    if None not in slices and len(slices) > 1:
        return "slice", len(slices)
    if dcn_requested:
        return "process", len({d.process_index for d in devices})
    return "none", 1


def plan_mesh(mesh_cfg: Mapping[str, Any], devices: Sequence) -> MeshPlan:
    """Resolve ``config.mesh`` for ``devices``: ``data/fsdp/tensor`` within a slice (one may be -1 = the
    rest of the slice), ``dcn_data/dcn_fsdp/dcn_tensor`` across slices (one may be -1 = the rest)."""
    dcn_sizes = [int(mesh_cfg.get(a, -1 if a == "dcn_data" else 1)) for a in DCN_AXES]
    granule, count = _granules(devices, any(s > 1 for s in dcn_sizes))
    dcn = _resolve_sizes(dcn_sizes, DCN_AXES, count, f"{granule}s" if granule != "none" else "slices")
    if len(devices) % count:
        raise ConfigError(f"config.mesh: {len(devices)} devices do not split evenly into {count} {granule}s")
    ici = _resolve_sizes(
        [int(mesh_cfg.get(a, 1)) for a in MESH_AXES],
        MESH_AXES,
        len(devices) // count,
        "devices per slice" if count > 1 else "devices",
    )
    return MeshPlan(ici, dcn, granule, len(devices))


def mesh_shape(mesh_cfg: Mapping[str, Any], devices: Sequence | int) -> tuple[int, int, int]:
    """The ``(data, fsdp, tensor)`` sizes of ``config.mesh`` on ``devices`` (a device list or a count)."""
    if isinstance(devices, int):
        devices = [_Anonymous(i) for i in range(devices)]
    return plan_mesh(mesh_cfg, devices).shape


@dataclasses.dataclass(frozen=True)
class _Anonymous:
    """A stand-in device for checks by device count (one process, no slices)."""

    id: int
    process_index: int = 0


def make_mesh(mesh_cfg: Mapping[str, Any], devices: Sequence | None = None) -> Mesh:
    """The ``(data, fsdp, tensor)`` mesh of ``config.mesh``, laid out on the interconnect.

    ``jax.experimental.mesh_utils`` assigns the axes to the physical topology (on TPUs the torus, so the
    innermost axis, ``tensor``, gets the fastest links); across slices (or hosts) a hybrid mesh puts the
    DCN part of each axis outermost. A mesh that the topology cannot hold is a :class:`ConfigError`.
    """
    from jax.experimental import mesh_utils

    devices = list(jax.devices() if devices is None else devices)
    plan = plan_mesh(mesh_cfg, devices)
    split = bool(mesh_cfg.get("allow_split_physical_axes", False))
    try:
        if plan.granule == "none":
            device_array = mesh_utils.create_device_mesh(plan.ici, devices, allow_split_physical_axes=split)
        else:
            device_array = mesh_utils.create_hybrid_device_mesh(
                plan.ici,
                plan.dcn,
                devices,
                process_is_granule=plan.granule == "process",
                allow_split_physical_axes=split,
            )
    except (ValueError, NotImplementedError, AssertionError) as e:
        hint = "" if split else "; config.mesh.allow_split_physical_axes=True allows splitting them"
        raise ConfigError(
            f"config.mesh: {plan.describe()} cannot be laid out on the {devices[0].device_kind} "
            f"interconnect ({' '.join(str(e).split())}){hint}"
        ) from None
    return Mesh(device_array, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def to_global(tree, shardings):
    """Place host values (identical on every host) as global arrays with ``shardings`` (multi-host safe)."""

    def put(x, sharding):
        if x is None:
            return None
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x), sharding), impl=impl)
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


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
    ``Format`` with the (O, H, W, I)-major layout and its sharding. ``xla_auto`` (benchmarks only) lets
    XLA choose every leaf's layout."""
    if layout == "default":
        return state_shardings
    from jax.experimental.layout import Format, Layout

    if layout == "xla_auto":
        return jax.tree.map(lambda s: Format(Layout.AUTO, s), state_shardings)

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
