"""Data-parallel editing: many edits over every local device and every host of a job.

``python -m rewardedit_jax.evaluate`` and ``python -m rewardedit_jax.edit`` (several images) share this
(the sampler itself is :mod:`rewardedit_jax.sampling`):

- :func:`local_mesh`: a 1-D ``("data",)`` mesh over this process's devices, for
  :class:`~rewardedit_jax.sampling.EditSampler` (``None`` with one device: the unsharded sampler).
- :func:`generate`: groups edits by image size and samples each group in calls of ``batch_size`` edits *per
  device* (fewer when the whole group is smaller), the last call of a group padded with copies of its last
  edit whose outputs are dropped. Every call of a size has one shape, so each size compiles once per host.
  Each device always computes the same per-device batch whatever the number of devices, and an edit's noise
  comes from its own seed, so the edits do not depend on how many devices or hosts made them (tested
  bit-exact on CPU for 1, 8 and 2 x 2 devices).
- In a multi-host job (``jax.process_count() > 1``) host ``h`` samples edits ``h, h + H, h + 2H, ...`` of each
  size group; :func:`broadcast_from_first`, :func:`gather` and :func:`barrier` synchronize the hosts
  (collectives over all devices), and :func:`initialize_distributed` starts the job from command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

DATA_AXIS = "data"
# How long a process that finished its share waits at exit for the others (jax.distributed's shutdown
# barrier, 5 minutes by default): process 0 still judges and writes the results after the last edit.
SHUTDOWN_TIMEOUT_S = 6 * 3600


@dataclasses.dataclass(frozen=True)
class EditJob:
    """One edit to make: a fitted image (H, W, 3) uint8, its instruction and seed, and the caller's key."""

    image: np.ndarray
    instruction: str
    seed: int
    key: Hashable = None


def local_mesh():
    """A ``("data",)`` mesh over this process's devices, or None when it has one device."""
    import jax
    from jax.sharding import Mesh

    devices = jax.local_devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,)) if len(devices) > 1 else None


def sampler_devices(sampler) -> int:
    """How many devices a sampler shards its batch over (1 without a mesh)."""
    mesh = getattr(sampler, "mesh", None)
    return 1 if mesh is None else int(mesh.shape[sampler.data_axis])


def plan_calls(
    count: int, *, batch_size: int, devices: int, hosts: int = 1, host: int = 0
) -> tuple[int, list[list[int]]]:
    """How host ``host`` of ``hosts`` samples one size group of ``count`` edits.

    Returns (edits per call, the calls): each call a list of at most that many positions in the group, from
    this host's share (``host, host + hosts, ...``); the caller pads a short call to the full size. The
    per-device batch is ``min(batch_size, count)``: it depends on the whole group, never on ``devices``,
    ``hosts`` or the share, so every device computes the same shapes however the edits are spread.
    """
    if batch_size < 1 or devices < 1 or hosts < 1 or not 0 <= host < hosts:
        raise ValueError(f"bad plan: batch_size {batch_size}, devices {devices}, host {host} of {hosts}")
    per_call = min(batch_size, count) * devices
    share = list(range(host, count, hosts))
    return per_call, [share[first : first + per_call] for first in range(0, len(share), per_call)]


def generate(
    sampler,
    jobs: Sequence[EditJob],
    write: Callable[[EditJob, np.ndarray], None],
    *,
    batch_size: int,
    hosts: int = 1,
    host: int = 0,
    on_call: Callable[[int], None] | None = None,
    **sample_kwargs: Any,
) -> int:
    """Sample this host's share of ``jobs`` with ``sampler`` and ``write(job, image)`` each edit.

    ``sample_kwargs`` go to every sampler call (steps, guidance, reward condition); ``on_call(n)`` is told
    after each call how many edits it wrote. Returns the number of edits this host made.
    """
    devices = sampler_devices(sampler)
    groups: dict[tuple[int, ...], list[EditJob]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.image.shape), []).append(job)
    made = 0
    for shape in sorted(groups):
        members = groups[shape]
        per_call, calls = plan_calls(
            len(members), batch_size=batch_size, devices=devices, hosts=hosts, host=host
        )
        for call in calls:
            real = len(call)
            batch = [members[i] for i in call + [call[-1]] * (per_call - real)]  # one shape per size
            result = sampler(
                np.stack([job.image for job in batch]),
                [job.instruction for job in batch],
                seed=np.asarray([job.seed for job in batch], np.int64),
                **sample_kwargs,
            )
            for job, image in zip(batch[:real], result.images[:real]):
                write(job, image)
            made += real
            if on_call is not None:
                on_call(real)
    return made


# ---------------------------------------------------------------------------------------- several hosts


def hosts() -> tuple[int, int]:
    """(number of processes, this process's index) of the JAX job."""
    import jax

    return jax.process_count(), jax.process_index()


def broadcast_from_first(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process (an array of the same shape and dtype on every process)."""
    import jax

    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def gather(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` stacked by process index: (processes, *values.shape)."""
    import jax

    values = np.asarray(values)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier called ``name``."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    """The multi-host flags of ``evaluate`` and ``edit`` (the trainer's, spelled with dashes)."""
    p.add_argument("--coordinator-address", help="multi-host: host:port of process 0")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Start the multi-host JAX job, before JAX is used: with the given coordinator (CPU collectives over
    gloo, for multi-process runs on CPUs), or automatically on a TPU pod or in a SLURM job of several tasks
    (as ``python -m rewardedit_jax.train``). Without either, a single process: nothing to do."""
    import jax

    if coordinator_address or num_processes:
        if not coordinator_address or num_processes is None or process_id is None:
            raise ValueError("--coordinator-address, --num-processes and --process-id go together")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id must be in 0..{num_processes - 1}; got {process_id}")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
        )
    elif "TPU_WORKER_HOSTNAMES" in os.environ or (
        "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ):
        jax.distributed.initialize(shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
