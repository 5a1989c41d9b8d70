"""Stage 1: InstructPix2Pix from Stable Diffusion 1.5 on the `instruct_pix2pix` dataset.

    tfds build tfds_builders/instruct_pix2pix --manual_dir M --data_dir D --file_format array_record
    python -m rewardedit_jax.convert import path/to/stable-diffusion-v1-5 sd15_flax --in-channels 8
    python -m rewardedit_jax.train --config configs/sd15_ip2p.py --workdir runs/stage1 \
        --config.init_from=sd15_flax --config.data.data_dir=D

``init_from`` may also be the diffusers folder itself (the 4-channel conv_in is expanded to 8, the new
channels zero). The official recipe (docs/sources.md, "Training recipe": 256 px, AdamW 5e-5 constant, clip
1.0, CFG dropout 0.05, EMA, global batch 128) and the sharded train state, as in stage 2:
``rewardedit_jax.configs.sd15.training_config``. TPU slices ``CONFIG:v5e-16`` and ``CONFIG:v5p-8``:
rewardedit_jax/configs/tpu.py.
"""

from rewardedit_jax.configs import sd15, tpu


def get_config(variant: str = ""):
    return tpu.apply(sd15.training_config("instruct_pix2pix", reward=False), variant)
