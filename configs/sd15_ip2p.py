"""Stage 1: InstructPix2Pix from Stable Diffusion 1.5 on the `instruct_pix2pix` dataset.

    tfds build tfds_builders/instruct_pix2pix --manual_dir M --data_dir D --file_format array_record
    python -m rewardedit_jax.convert import path/to/stable-diffusion-v1-5 sd15_flax --in-channels 8
    python -m rewardedit_jax.train --config configs/sd15_ip2p.py --workdir runs/stage1 \
        --config.init_from=sd15_flax --config.data.data_dir=D

The official recipe (docs/sources.md, "Training recipe"): 256px, AdamW 5e-5 constant, clip 1.0, CFG
dropout 0.05, EMA. ``init_from`` may also be the diffusers folder itself (the 4-channel conv_in is expanded
to 8, the new channels zero). The SD 1.5 architecture below is used only for random init
(``init_from=''``) and for ahead-of-time compilation from abstract shapes.

Global batch 128, the train state sharded over every device by default. TPU slices: ``CONFIG:v5e-16``
(5.9-6.0 GiB of 16 GiB per chip at 256 px) and ``CONFIG:v5p-8`` (29 GiB of 95 GiB), measured by
``python -m rewardedit_jax.aot`` (configs/tpu.py, docs/scaling.md).
"""

from configs import default, tpu

SD15_UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=2,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=8,
    out_channels=4,
)
SD15_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    scaling_factor=0.18215,
)
SD15_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=2,
    pad_token_id=1,
)


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


def shard_train_state(c):
    """Shard parameters, Adam moments and EMA over every device (``fsdp=-1``).

    The SD 1.5 train state is 13.8 GB in float32 (docs/scaling.md), more than a 16 GiB TPU v5e chip or a
    24 GB GPU can hold next to the activations, so these configs shard it by default; the batch is split
    over the same axis. Where a replica fits and the all-reduce is cheaper, pick data parallelism instead:
    ``--config.mesh.data=-1 --config.mesh.fsdp=1`` (or the ``v5p-8`` variant).
    """
    c.mesh.data = 1
    c.mesh.fsdp = -1
