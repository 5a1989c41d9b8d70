"""The Stable Diffusion 1.5 architecture (diffusers configs of its U-Net, VAE, CLIP text encoder and noise
schedule) and the
sharded train-state layout of the SD 1.5 configs (configs/sd15_ip2p.py, configs/sd15_reward.py).

Used for random init (``init_from=''``), for ahead-of-time compilation from abstract shapes and by the
benchmarks; runs from real weights take the architecture from ``init_from``.
"""

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
# Its noise schedule, as in its scheduler/scheduler_config.json (also InstructPix2Pix's).
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
}
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


def shard_train_state(c):
    """Shard parameters, Adam moments and EMA over every device (``fsdp=-1``).

    The SD 1.5 train state is 13.8 GB in float32 (docs/scaling.md), more than a 16 GiB TPU v5e chip or a
    24 GB GPU can hold next to the activations, so these configs shard it by default; the batch is split
    over the same axis. Where a replica fits and the all-reduce is cheaper, pick data parallelism instead:
    ``--config.mesh.data=-1 --config.mesh.fsdp=1`` (or the ``v5p-8`` variant).
    """
    c.mesh.data = 1
    c.mesh.fsdp = -1
