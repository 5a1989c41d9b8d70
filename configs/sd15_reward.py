"""Stage 2: the reward-conditioned InstructPix2Pix of Gu et al. 2024 on `reward_edit` (RewardEdit20K).

    tfds build tfds_builders/reward_edit --manual_dir M --data_dir D --file_format array_record
    python -m rewardedit_jax.train --config configs/sd15_reward.py --workdir runs/stage2 \
        --config.init_from=runs/stage1 --config.data.data_dir=D

``init_from``: a stage-1 training workdir (its EMA weights), a Flax model directory, or an InstructPix2Pix
diffusers folder (e.g. timbrooks/instruct-pix2pix downloaded by hand); the reward modules are added with
fresh weights. The official hyperparameters (lr 5e-5 constant, no warmup, 10,000 steps, global batch 128,
a checkpoint every 500, EMA) and the sharded train state: ``rewardedit_jax.configs.sd15.training_config``.
TPU slices: ``CONFIG:v5e-16`` (5.9-6.0 GiB of 16 GiB per chip at 256 px) and ``CONFIG:v5p-8`` (29 GiB of
95 GiB), measured by ``python -m rewardedit_jax.aot`` (rewardedit_jax/configs/tpu.py, docs/scaling.md).
"""

from rewardedit_jax.configs import sd15, tpu


def get_config(variant: str = ""):
    return tpu.apply(sd15.training_config("reward_edit", reward=True), variant)
