#!/usr/bin/env bash
# Run N training processes on this machine (CPU devices, gloo collectives) — the same code path as a
# multi-host GPU/TPU job, for testing and debugging. Every process runs the same command.
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS --config configs/test_tiny.py \
#       --workdir /tmp/run --config.model.tokenizer=... --config.data.data_dir=...
set -euo pipefail
num_processes=${1:?number of processes}; shift
devices=${1:?devices per process}; shift
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${devices}"
pids=()
for ((i = 0; i < num_processes; i++)); do
  python -m rewardedit_jax.train "$@" --coordinator_address="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${i}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
