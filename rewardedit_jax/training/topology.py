"""Device topologies to compile for without owning them: TPU slice names, their chips and devices.

``python -m rewardedit_jax.aot --topology v5e-16`` compiles the train step for a TPU slice on any machine:
with ``libtpu`` installed, ``jax.experimental.topologies.get_topology_desc`` describes the slice's devices
(ids, coordinates, hosts, slices) without a TPU, and XLA compiles a real TPU executable for them.

Slice names follow Cloud TPU's accelerator types: ``v5e-16`` and ``v6e-8`` count chips; ``v4-32`` and
``v5p-8`` count TensorCores (two per chip, used as one "megacore" device), so ``v5p-8`` is 4 chips. Chip
figures are Cloud TPU's documented ones (docs.cloud.google.com/tpu/docs/v4, v5e, v5p, v6e: peak bf16
compute and HBM capacity per chip), read 2026-12.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re

from rewardedit_jax import platforms

GiB = 1024**3


class TopologyError(ValueError):
    """An unknown or malformed topology name, or a topology that cannot be described here."""


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str  # v4, v5e, v5p, v6e
    device_kind: str  # what jax reports as Device.device_kind
    hbm_bytes: int
    peak_bf16_tflops: float
    cores_per_chip: int  # TensorCores per chip counted by the slice name (megacore chips: 2)
    torus_dims: int  # 2 (v5e, v6e) or 3 (v4, v5p)
    chips_per_host: int  # chips per TPU VM host
    topology_prefix: str  # the generation as get_topology_desc names it


CHIPS = {
    "v4": Chip("v4", "TPU v4", 32 * GiB, 275.0, 2, 3, 4, "v4"),
    "v5e": Chip("v5e", "TPU v5 lite", 16 * GiB, 197.0, 1, 2, 8, "v5e"),
    "v5p": Chip("v5p", "TPU v5", 95 * GiB, 459.0, 2, 3, 4, "v5"),
    "v6e": Chip("v6e", "TPU v6 lite", 32 * GiB, 918.0, 1, 2, 8, "v6e"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as given, e.g. v5e-16
    chip: Chip
    shape: tuple[int, ...]  # chips per torus dimension (2 or 3 of them)
    num_slices: int = 1

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.shape)

    @property
    def num_chips(self) -> int:
        return self.chips_per_slice * self.num_slices

    @property
    def topology_name(self) -> str:
        return f"{self.chip.topology_prefix}:{'x'.join(map(str, self.shape))}"

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        # Hosts of a multi-host slice hold a 2x2 block; a single host of 8 chips (v5e-8, v6e-8) is 2x4.
        if self.chips_per_slice <= self.chip.chips_per_host:
            bounds = tuple(self.shape) + (1,) * (3 - len(self.shape))
            return bounds  # type: ignore[return-value]
        return (2, 2, 1)

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        # Full rings close into a torus: 16 chips along a v5e/v6e axis, a whole 4x4x4 cube on v4/v5p.
        if self.chip.torus_dims == 3:
            full = min(self.shape) >= 4
            return (full, full, full)
        return tuple(d >= 16 for d in self.shape) + (False,)  # type: ignore[return-value]

    def describe(self) -> str:
        slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
        return (
            f"{self.name}{slices}: {self.num_chips} {self.chip.device_kind} chips "
            f"({self.topology_name}{slices}), {self.chip.hbm_bytes / GiB:g} GiB HBM and "
            f"{self.chip.peak_bf16_tflops:g} TFLOP/s bf16 per chip"
        )

    @property
    def accelerator_type(self) -> str:
        """Cloud TPU's accelerator type for one slice, e.g. ``v5litepod-16`` for ``v5e-16``."""
        prefix = {"v5e": "v5litepod"}.get(self.chip.generation, self.chip.generation)
        return f"{prefix}-{self.chips_per_slice * self.chip.cores_per_chip}"

    def devices(self):
        """The topology's devices (jax Device objects for compilation only); needs libtpu."""
        import importlib.util

        from jax.experimental import topologies

        if importlib.util.find_spec("libtpu") is None:
            raise TopologyError(
                f"--topology {self.name}: compiling for a TPU needs libtpu: pip install 'rewardedit-jax[tpu]'"
            )
        # libtpu takes a machine-wide lock unless told that several processes may load it (parallel
        # compile checks and test workers only describe topologies; none drives a TPU).
        env = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
        if platforms.tpu_chips() == 0:
            # Off a TPU VM libtpu cannot read the host's accelerator type or worker names from the
            # metadata server and logs errors for both; describing a topology needs neither.
            env.update(
                TPU_SKIP_MDS_QUERY="1",
                TPU_ACCELERATOR_TYPE=self.accelerator_type,
                TPU_WORKER_HOSTNAMES="localhost",
            )
        try:
            with _environment_defaults(env):
                description = topologies.get_topology_desc(
                    platform="tpu",
                    topology_name=self.topology_name,
                    chip_config_name="megacore" if self.chip.cores_per_chip > 1 else "default",
                    chips_per_host_bounds=self.chips_per_host_bounds,
                    num_slices=self.num_slices,
                    wrap=self.wrap,
                )
        except Exception as e:  # libtpu missing or refusing the topology
            detail = " ".join(str(e).split())[:300]
            hint = ""
            if "tpu" in detail.lower() and (
                "not found" in detail.lower() or "unknown backend" in detail.lower()
            ):
                hint = "; install libtpu: pip install 'rewardedit-jax[tpu]'"
            raise TopologyError(f"--topology {self.name}: cannot describe it ({detail}){hint}") from None
        devices = list(description.devices)
        if len(devices) != self.num_chips:
            raise TopologyError(
                f"--topology {self.name}: libtpu describes {len(devices)} devices, expected {self.num_chips}"
            )
        return devices


@contextlib.contextmanager
def _environment_defaults(values: dict[str, str]):
    """``values`` as defaults of ``os.environ`` while the block runs, then the environment as it was: the
    worker names that quiet libtpu would otherwise make this process (and every process it starts) look
    like a TPU pod worker to ``jax.distributed``'s auto-detection."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _slice_shape(chip: Chip, chips: int) -> tuple[int, ...]:
    """The usual torus shape of a slice of ``chips`` (powers of two; Cloud TPU's standard shapes)."""
    if chips < 1 or chips & (chips - 1):
        raise TopologyError(f"{chips} chips: only power-of-two slices are supported")
    if chip.torus_dims == 2:
        # 4 -> 2x2, 8 -> 2x4, 16 -> 4x4, 32 -> 4x8, ... 256 -> 16x16
        x = 1 << (chips.bit_length() - 1) // 2
        return (x, chips // x) if chips > 1 else (1, 1)
    if chips < 4:
        raise TopologyError(f"{chips} chips: the smallest {chip.generation} slice has 4 chips")
    # 4 -> 2x2x1, 8 -> 2x2x2, 16 -> 2x2x4, 32 -> 2x4x4, 64 -> 4x4x4, 128 -> 4x4x8, ...
    shape = [2, 2, 1]
    while math.prod(shape) < chips:
        if shape[2] < shape[1]:
            shape[2] *= 2
        else:
            small = [i for i in range(3) if shape[i] < max(shape)]
            shape[small[-1] if small else 2] *= 2
    return tuple(shape)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
    """``v5e-16``, ``v5p-8``, ``v4-32``, ``v6e-8`` (Cloud TPU accelerator types), or an explicit
    ``v5e:4x4`` / ``v5p:2x2x1`` shape."""
    if num_slices < 1:
        raise TopologyError(f"--num-slices must be at least 1, got {num_slices}")
    known = ", ".join(CHIPS)
    m = re.fullmatch(r"(v\d+[a-z]?)(?:-(\d+)|:(\d+(?:x\d+){1,2}))", name.strip().lower())
    if not m or m.group(1) not in CHIPS:
        raise TopologyError(
            f"--topology {name!r}: expected GENERATION-COUNT (e.g. v5e-16, v5p-8, v4-32, v6e-8) or "
            f"GENERATION:SHAPE (e.g. v5e:4x4); generations: {known}"
        )
    chip = CHIPS[m.group(1)]
    if m.group(2):
        count = int(m.group(2))
        if count % chip.cores_per_chip:
            raise TopologyError(
                f"--topology {name}: {chip.generation} names count TensorCores, "
                f"{chip.cores_per_chip} per chip"
            )
        shape = _slice_shape(chip, count // chip.cores_per_chip)
    else:
        shape = tuple(int(v) for v in m.group(3).split("x"))
        if len(shape) != chip.torus_dims:
            raise TopologyError(
                f"--topology {name}: {chip.generation} slices have {chip.torus_dims} dimensions"
            )
    return Topology(name, chip, shape, num_slices)
