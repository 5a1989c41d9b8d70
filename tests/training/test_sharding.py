"""Meshes on real interconnects: TPU topologies (described by libtpu, no TPU needed), slices, hosts."""

from __future__ import annotations

import types

import numpy as np
import pytest
from jax.experimental import mesh_utils

from rewardedit_jax.training import sharding
from rewardedit_jax.training.sharding import ConfigError
from rewardedit_jax.training.topology import parse_topology


def _mesh_cfg(data, fsdp, tensor, **extra):
    return {"data": data, "fsdp": fsdp, "tensor": tensor, **extra}


@pytest.fixture(scope="module")
def v5e16():
    return parse_topology("v5e-16").devices()


@pytest.mark.parametrize("shape", [(4, 4, 1), (16, 1, 1), (1, 1, 16)])
def test_tpu_topology_mesh_is_the_mesh_utils_layout_not_device_order(v5e16, shape):
    mesh = sharding.make_mesh(_mesh_cfg(*shape), v5e16)
    expected = mesh_utils.create_device_mesh(shape, v5e16)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert [d.id for d in mesh.devices.flat] == [d.id for d in expected.flat]
    # The interconnect-aware layout, which plain device order is not (the ids run host by host).
    assert [d.id for d in mesh.devices.flat] != [d.id for d in np.asarray(v5e16).reshape(shape).flat]


def test_v5p_megacore_topology_mesh_is_the_mesh_utils_layout():
    devices = parse_topology("v5p-16").devices()
    mesh = sharding.make_mesh(_mesh_cfg(1, 8, 1), devices)
    expected = mesh_utils.create_device_mesh((1, 8, 1), devices)
    assert [d.id for d in mesh.devices.flat] == [d.id for d in expected.flat]


def test_multi_slice_mesh_puts_the_dcn_part_of_each_axis_outermost():
    devices = parse_topology("v5e-16", num_slices=2).devices()
    assert sorted({d.slice_index for d in devices}) == [0, 1]
    # The default dcn_data=-1 takes both slices: data = 2 (DCN) x 4 (in-slice).
    mesh = sharding.make_mesh(_mesh_cfg(4, 4, 1), devices)
    assert mesh.devices.shape == (8, 4, 1)
    for row in range(8):
        assert {d.slice_index for d in mesh.devices[row].flat} == {row // 4}
    # Each slice's block is that slice's own interconnect-aware mesh.
    per_slice = mesh_utils.create_device_mesh((4, 4, 1), [d for d in devices if d.slice_index == 1])
    assert [d.id for d in mesh.devices[4:].flat] == [d.id for d in per_slice.flat]
    # FSDP across slices when asked: the fsdp axis gets the DCN part, data stays in-slice.
    mesh = sharding.make_mesh(_mesh_cfg(1, 16, 1, dcn_data=1, dcn_fsdp=2), devices)
    assert mesh.devices.shape == (1, 32, 1)
    assert [d.slice_index for d in mesh.devices[0, :, 0]] == [0] * 16 + [1] * 16
    plan = sharding.plan_mesh(_mesh_cfg(1, 16, 1, dcn_data=1, dcn_fsdp=2), devices)
    assert "2 slices; across them: fsdp=2" in plan.describe()


def test_a_mesh_the_topology_cannot_hold_is_one_line_error_and_splitting_is_opt_in(v5e16):
    with pytest.raises(ConfigError) as e:
        sharding.make_mesh(_mesh_cfg(2, 8, 1), v5e16)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("config.mesh: mesh data=2 fsdp=8 tensor=1 over 16 devices cannot be laid out")
    assert "allow_split_physical_axes=True" in message
    mesh = sharding.make_mesh(_mesh_cfg(2, 8, 1, allow_split_physical_axes=True), v5e16)
    assert mesh.devices.shape == (2, 8, 1)


def test_mesh_sizes_that_do_not_divide_the_devices_are_config_errors(v5e16):
    with pytest.raises(ConfigError, match=r"config.mesh \{'data': 3, 'fsdp': 4, 'tensor': 1\} needs 12"):
        sharding.make_mesh(_mesh_cfg(3, 4, 1), v5e16)
    with pytest.raises(ConfigError, match="only one of data, fsdp, tensor may be -1"):
        sharding.make_mesh(_mesh_cfg(-1, -1, 1), v5e16)
    slices = parse_topology("v5e-16", num_slices=2).devices()
    with pytest.raises(ConfigError, match=r"dcn_data.*needs 3 slices; 2 available"):
        sharding.make_mesh(_mesh_cfg(4, 4, 1, dcn_data=3), slices)


def test_devices_without_slices_use_hosts_for_dcn_axes_only_when_asked():
    hosts = [types.SimpleNamespace(id=i, process_index=i // 4) for i in range(8)]
    plan = sharding.plan_mesh(_mesh_cfg(-1, 1, 1), hosts)
    assert (plan.granule, plan.ici, plan.dcn) == ("none", (8, 1, 1), (1, 1, 1))
    plan = sharding.plan_mesh(_mesh_cfg(1, -1, 1, dcn_data=2), hosts)
    assert (plan.granule, plan.ici, plan.dcn, plan.shape) == ("process", (1, 4, 1), (2, 1, 1), (2, 4, 1))


def test_describing_a_topology_leaves_the_environment_as_it_was(v5e16):
    # libtpu is quietened with TPU worker variables while it describes a topology; left behind, they
    # would make this process and its children start jax.distributed as if on a TPU pod.
    import os

    before = dict(os.environ)
    parse_topology("v5e-4").devices()
    assert dict(os.environ) == before
    assert "TPU_WORKER_HOSTNAMES" not in os.environ
