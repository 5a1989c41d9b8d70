"""The Stable Diffusion 1.5 architecture (diffusers configs of its U-Net, VAE, CLIP text encoder and noise
schedule), and the training recipe and sharded train-state layout of the SD 1.5 configs
(configs/sd15_ip2p.py, configs/sd15_reward.py: :func:`training_config`).

Used for random init (``init_from=''``), for ahead-of-time compilation from abstract shapes and by the
benchmarks; runs from real weights take the architecture from ``init_from``.
"""

from rewardedit_jax.configs import default
from rewardedit_jax.configs.components import clip_text_config, unet_config, vae_config

SD15_UNET = unet_config(
    [320, 640, 1280, 1280],
    [True, True, True, False],
    cross_attention_dim=768,
    attention_head_dim=8,
    layers_per_block=2,
    act_fn="silu",
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=8,
    out_channels=4,
)
SD15_VAE = vae_config([128, 256, 512, 512], layers_per_block=2, scaling_factor=0.18215)
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
SD15_TEXT_ENCODER = clip_text_config(
    49408, width=768, mlp=3072, layers=12, heads=12, bos_token_id=49406, eos_token_id=2, pad_token_id=1
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


def training_config(dataset: str, *, reward: bool):
    """The SD 1.5 runs' config (configs/sd15_ip2p.py, configs/sd15_reward.py) on ``dataset``.

    The official recipe (docs/sources.md, "Training recipe"): 256 px, AdamW at a constant 5e-5 without
    warmup (the default), 10,000 steps, global batch 128 (per-GPU batch 4 x 4 accumulation steps x 8 GPUs;
    here one micro-batch per step on any number of devices), a checkpoint every 500 steps, EMA (the
    default). The SD 1.5 architecture, used for random init (``init_from=''``) and for compiling from
    abstract shapes; a run from real weights takes it from ``init_from``. The train state is sharded
    (:func:`shard_train_state`).
    """
    c = default.get_config()
    c.update(total_steps=10_000, batch_size=128, learning_rate=5e-5, checkpoint_every_steps=500)
    c.data.update(name=dataset, resolution=256)
    c.model.update(unet=SD15_UNET, vae=SD15_VAE, text_encoder=SD15_TEXT_ENCODER)
    c.reward.enabled = reward
    shard_train_state(c)
    return c
