"""Stage 1: InstructPix2Pix from Stable Diffusion 1.5 on the `instruct_pix2pix` dataset.

    tfds build tfds_builders/instruct_pix2pix --manual_dir M --data_dir D --file_format array_record
    python -m rewardedit_jax.convert import path/to/stable-diffusion-v1-5 sd15_flax --in-channels 8
    python -m rewardedit_jax.train --config configs/sd15_ip2p.py --workdir runs/stage1 \
        --config.init_from=sd15_flax --config.data.data_dir=D

The official recipe (docs/sources.md, "Training recipe"): 256px, AdamW 5e-5 constant, clip 1.0, CFG
dropout 0.05, EMA. ``init_from`` may also be the diffusers folder itself (the 4-channel conv_in is expanded
to 8, the new channels zero). The SD 1.5 architecture (rewardedit_jax/configs/sd15.py) is used
only for random init (``init_from=''``) and for ahead-of-time compilation from abstract shapes.

Global batch 128, the train state sharded over every device by default. TPU slices: ``CONFIG:v5e-16``
(5.9-6.0 GiB of 16 GiB per chip at 256 px) and ``CONFIG:v5p-8`` (29 GiB of 95 GiB), measured by
``python -m rewardedit_jax.aot`` (rewardedit_jax/configs/tpu.py, docs/scaling.md).
"""

from rewardedit_jax.configs import default, tpu
from rewardedit_jax.configs.sd15 import SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE, shard_train_state


def get_config(variant: str = ""):
    c = default.get_config()
    c.total_steps = 10_000
    c.batch_size = 128
    c.learning_rate = 5e-5
    c.checkpoint_every_steps = 500
    c.data.name = "instruct_pix2pix"
    c.data.resolution = 256
    c.model.unet = SD15_UNET
    c.model.vae = SD15_VAE
    c.model.text_encoder = SD15_TEXT_ENCODER
    c.reward.enabled = False
    shard_train_state(c)
    return tpu.apply(c, variant)
