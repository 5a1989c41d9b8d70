#!/usr/bin/env bash
# TPU pod: run the same training command on every worker of a TPU VM slice, through one
# `gcloud compute tpus tpu-vm ssh --worker=all`. jax.distributed.initialize() is automatic on TPU pods. The
# repository and the dataset must be reachable from every worker (e.g. the same checkout on each worker and
# gs:// or a mounted data_dir; the workdir on GCS or a shared file system).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   launch/tpu_pod.sh my-v5p-64 us-east5-a configs/sd15_reward.py gs://bucket/runs/stage2 \
#       --config.init_from=gs://bucket/runs/stage1 --config.data.data_dir=gs://bucket/tfds
#
# Each worker runs `cd REPO_DIR && python3 -m rewardedit_jax.train --config CONFIG --workdir WORKDIR ...`
# through its login shell (bash on TPU VM images); every argument is shell-quoted, so paths and overrides
# with spaces or shell metacharacters arrive unchanged.
#
# Environment:
#   REPO_DIR     the checkout on the workers (default ~/rewardedit-jax). A leading ~ is expanded on the
#                worker, so write it quoted ('~/src/rewardedit-jax') to mean the worker's home.
#   DRY_RUN=1    print instead of running (gcloud is not called): first the gcloud command, then one line
#                per worker, "worker I: COMMAND", COMMAND being the shell command worker I executes.
#   NUM_WORKERS  the slice's worker count, needed by DRY_RUN=1 (it does not ask gcloud).
set -euo pipefail

usage() {
  echo "usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]: $1" >&2
  exit 2
}

required=(TPU_NAME ZONE CONFIG WORKDIR)
(($# >= ${#required[@]})) || usage "missing ${required[*]:$#}"
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
[[ -n $tpu ]] || usage "TPU_NAME is empty"
[[ -n $zone ]] || usage "ZONE is empty"
[[ -n $config ]] || usage "CONFIG is empty"
[[ -n $workdir ]] || usage "WORKDIR is empty"
case ${DRY_RUN:-0} in
  0) dry_run=0 ;;
  1) dry_run=1 ;;
  *) usage "DRY_RUN must be 0 or 1, got '${DRY_RUN}'" ;;
esac
if ((dry_run)) && ! [[ ${NUM_WORKERS:-} =~ ^[1-9][0-9]*$ ]]; then
  usage "DRY_RUN=1 needs NUM_WORKERS, the slice's worker count (a positive integer), got '${NUM_WORKERS:-}'"
fi
default_repo='~/rewardedit-jax'
repo=${REPO_DIR:-$default_repo}
[[ -n $repo ]] || usage "REPO_DIR is empty"

# The path quoted for the worker's shell; a leading ~ stays unquoted so that the worker expands it.
quote_remote_path() {
  case $1 in
    "~") printf '~' ;;
    "~/"*) printf '~/%q' "${1#"~/"}" ;;
    *) printf '%q' "$1" ;;
  esac
}

printf -v train_args ' %q' --config "$config" --workdir "$workdir" "$@"
worker_command="cd $(quote_remote_path "$repo") && python3 -m rewardedit_jax.train${train_args}"
gcloud_argv=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$worker_command")

if ((dry_run)); then
  # The remote command in single quotes (it is the long one), every other word as printf %q writes it.
  printf -v line ' %q' "${gcloud_argv[@]:0:${#gcloud_argv[@]}-1}"
  echo "${line# } ${worker_command@Q}"
  for ((i = 0; i < NUM_WORKERS; i++)); do
    echo "worker ${i}: ${worker_command}"
  done
  exit 0
fi
exec "${gcloud_argv[@]}"
