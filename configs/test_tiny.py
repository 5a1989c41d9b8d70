"""A tiny random model on ``synthetic_edit/tiny`` for tests and CPU smoke runs (seconds per step).

    python -m rewardedit_jax.train --config configs/test_tiny.py --workdir /tmp/tiny \
        --config.data.data_dir=DATA_DIR [--config.model.tokenizer=PATH/tokenizer]

Without a tokenizer the run makes the word tokenizer of the dataset (its vocabulary replaces the text
encoder's ``vocab_size`` and token ids below, which fit the tests' tiny CLIP tokenizer).
"""

from rewardedit_jax.configs import default


def get_config():
    c = default.get_config()
    c.total_steps = 8
    c.batch_size = 8
    c.log_every_steps = 2
    c.checkpoint_every_steps = 4
    c.learning_rate = 1e-3
    c.compute_dtype = "float32"
    c.async_checkpointing = False
    c.data.name = "synthetic_edit/tiny"
    c.data.resolution = 32
    c.data.read_threads = 0
    c.model.unet = dict(
        block_out_channels=[32, 32],
        layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    c.model.vae = dict(
        block_out_channels=[16, 32],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    c.model.text_encoder = dict(
        vocab_size=531,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=529,
        eos_token_id=530,
        pad_token_id=530,
    )
    return c
