#!/usr/bin/env bash
# Run N training processes on this machine (CPU devices, gloo collectives): the same code path as a
# multi-host GPU/TPU job, for testing and debugging. Every process runs the same trainer command plus its
# --coordinator_address, --num_processes and --process_id.
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS --config configs/test_tiny.py \
#       --workdir /tmp/run --config.model.tokenizer=... --config.data.data_dir=...
#
# When a process fails, the others are stopped (a process waiting on a dead peer would wait forever) and
# the script exits with the failed process's status. SIGTERM or SIGINT to the script is passed on to the
# processes as SIGTERM (they save a checkpoint and stop). Processes still running KILL_AFTER_S seconds
# after a SIGTERM from this script get SIGKILL.
#
# Environment:
#   PYTHON        the interpreter (default python3)
#   PORT          the coordinator's port on 127.0.0.1 (default: a free one)
#   KILL_AFTER_S  see above (default 30)
set -euo pipefail

usage() {
  echo "usage: launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS TRAINER_ARGS...: $1" >&2
  exit 2
}

required=(NUM_PROCESSES DEVICES_PER_PROCESS TRAINER_ARGS)
(($# >= ${#required[@]})) || usage "missing ${required[*]:$#}"
num_processes=$1 devices=$2
shift 2
positive='^[1-9][0-9]*$'
[[ $num_processes =~ $positive ]] || usage "NUM_PROCESSES must be a positive integer, got '$num_processes'"
[[ $devices =~ $positive ]] || usage "DEVICES_PER_PROCESS must be a positive integer, got '$devices'"
kill_after=${KILL_AFTER_S:-30}
[[ $kill_after =~ ^[0-9]+$ ]] || usage "KILL_AFTER_S must be a whole number of seconds, got '$kill_after'"
python=${PYTHON:-python3}
[[ -n $python ]] || usage "PYTHON is empty"
if [[ -n ${PORT:-} ]]; then
  [[ $PORT =~ $positive ]] || usage "PORT must be a port number, got '$PORT'"
  port=$PORT
else
  port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

export JAX_PLATFORMS=cpu
# Replaces any inherited XLA_FLAGS: an inherited device count would otherwise compete with this one.
export XLA_FLAGS="--xla_force_host_platform_device_count=${devices}"

pids=()

signal_all() {
  local pid
  for pid in "${pids[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
}

any_running() {
  local pid
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

# SIGTERM to every process, SIGKILL to those still running after the grace time; then reap them all.
stop_all() {
  signal_all TERM
  local deadline=$((SECONDS + kill_after))
  while any_running && ((SECONDS < deadline)); do sleep 0.2; done
  if any_running; then
    echo "local_multiprocess.sh: processes still running ${kill_after}s after SIGTERM; sending SIGKILL" >&2
    signal_all KILL
  fi
  wait
}

on_signal() {
  trap - TERM INT
  echo "local_multiprocess.sh: $1: stopping the training processes" >&2
  stop_all
  exit "$2"
}
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGINT 130' INT

for ((i = 0; i < num_processes; i++)); do
  "$python" -m rewardedit_jax.train "$@" --coordinator_address="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${i}" &
  pids+=($!)
done

for ((finished = 0; finished < num_processes; finished++)); do
  status=0
  wait -n || status=$?
  if ((status != 0)); then
    echo "local_multiprocess.sh: a training process exited with status ${status}; stopping the others" >&2
    stop_all
    exit "$status"
  fi
done
