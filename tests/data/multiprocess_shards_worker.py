"""One process of the 2-process JAX CPU test (docs/sources.md, "Multi-process JAX on one CPU machine"):
reads its shard, builds global arrays.

Usage: python multiprocess_shards_worker.py PROCESS_ID PORT OPTIONS_JSON OUT_JSON
(OPTIONS_JSON: the keyword arguments of make_dataset but its shard, which comes from the process.)
"""

import json
import sys

import jax
import numpy as np


def main(process_id: int, port: int, options: dict, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from jax.experimental import multihost_utils

    from rewardedit_jax.data import make_dataset, make_global_batch

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    # shard_index / shard_count default to jax.process_index() / jax.process_count().
    iterator = make_dataset("synthetic_edit/tiny", **options)
    local_indices, global_indices, global_shape = [], [], None
    for batch in iterator:
        local_indices += batch["record_index"].tolist()
        arrays = make_global_batch(batch, mesh)
        global_shape = list(arrays["source_image"].shape)
        gathered = multihost_utils.process_allgather(arrays["record_index"], tiled=True)
        global_indices.append(np.asarray(gathered).tolist())
    result = {
        "global_devices": jax.device_count(),
        "local_indices": local_indices,
        "global_indices": global_indices,
        "global_shape": global_shape,
    }
    with open(out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4])
