"""Stage 2: the reward-conditioned InstructPix2Pix of Gu et al. 2024 on `reward_edit` (RewardEdit20K).

    tfds build tfds_builders/reward_edit --manual_dir M --data_dir D --file_format array_record
    python -m rewardedit_jax.train --config configs/sd15_reward.py --workdir runs/stage2 \
        --config.init_from=runs/stage1 --config.data.data_dir=D

``init_from``: a stage-1 training workdir (its EMA weights), a Flax model directory, or an InstructPix2Pix
diffusers folder (e.g. timbrooks/instruct-pix2pix downloaded by hand); the reward modules are added with
fresh weights. Official hyperparameters (docs/sources.md, "Training recipe"): lr 5e-5 constant, no
warmup, 10,000 steps, per-GPU batch 4 x accumulation 4 (x GPUs; 8 GPUs -> 128), checkpoint every 500, EMA.

Global batch 128, the train state sharded over every device by default. TPU slices: ``CONFIG:v5e-16``
(5.9-6.0 GiB of 16 GiB per chip at 256 px) and ``CONFIG:v5p-8`` (29 GiB of 95 GiB), measured by
``python -m rewardedit_jax.aot`` (rewardedit_jax/configs/tpu.py, docs/scaling.md).
"""

from rewardedit_jax.configs import default, sd15, tpu


def get_config(variant: str = ""):
    c = default.get_config()
    c.total_steps = 10_000
    c.batch_size = 128
    c.grad_accum_steps = 1
    c.learning_rate = 5e-5
    c.warmup_steps = 0
    c.checkpoint_every_steps = 500
    c.data.name = "reward_edit"
    c.data.resolution = 256
    c.model.unet = sd15.SD15_UNET
    c.model.vae = sd15.SD15_VAE
    c.model.text_encoder = sd15.SD15_TEXT_ENCODER
    c.reward.enabled = True
    sd15.shard_train_state(c)
    return tpu.apply(c, variant)
