"""``python -m rewardedit_jax.train --config configs/<name>.py --workdir DIR [--config.key=value ...]``.

Every host of a multi-host job runs the same command. ``jax.distributed.initialize()`` runs automatically
on TPU pods and under SLURM; elsewhere pass ``--coordinator_address``, ``--num_processes`` and
``--process_id`` (see ``launch/``).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

from rewardedit_jax.io import check_creatable

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the model.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_LOCAL_DEVICES = flags.DEFINE_string("local_device_ids", None, "Comma-separated local device ids (optional).")


def _maybe_initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value or _NUM_PROCESSES.value:
        # CPU collectives across processes (local multi-process runs); no effect on GPU/TPU devices.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        local = [int(i) for i in _LOCAL_DEVICES.value.split(",")] if _LOCAL_DEVICES.value else None
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
            local_device_ids=local,
        )
    elif any(
        k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
    ):
        if int(os.environ.get("SLURM_NTASKS", "2")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
            jax.distributed.initialize()


def main(argv) -> int:
    del argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s] %(message)s", stream=sys.stderr
    )
    logging.getLogger("absl").setLevel(logging.WARNING)
    from rewardedit_jax.io import PathError

    try:  # the workdir is first written after the models are built: a bad one fails now instead
        check_creatable(_WORKDIR.value, "--workdir")
    except PathError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _maybe_initialize_distributed()
    from rewardedit_jax.convert.weights import ConversionError
    from rewardedit_jax.training.sharding import ConfigError
    from rewardedit_jax.training.trainer import TrainingError, train_and_evaluate

    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, ConversionError, PathError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from rewardedit_jax import config_cli

    config_cli.run(main, ("config", "workdir"))
