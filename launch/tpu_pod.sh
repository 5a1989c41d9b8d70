#!/usr/bin/env bash
# TPU pod: run the same command on every worker of a TPU VM slice. jax.distributed.initialize() is
# automatic on TPU pods. The repository and the dataset must be reachable from every worker (e.g. a
# shared checkout and gs:// or a mounted data_dir; the workdir on GCS or a shared file system).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/sd15_reward.py gs://bucket/runs/stage2 \
#       --config.init_from=gs://bucket/runs/stage1 --config.data.data_dir=gs://bucket/tfds
set -euo pipefail
tpu=${1:?TPU name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
repo=${REPO_DIR:-~/rewardedit-jax}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd $repo && python3 -m rewardedit_jax.train --config $config --workdir $workdir $*"
