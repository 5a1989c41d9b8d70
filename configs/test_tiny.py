"""A tiny random model on ``synthetic_edit/tiny`` for tests and CPU smoke runs (seconds per step).

    python -m rewardedit_jax.train --config configs/test_tiny.py --workdir /tmp/tiny \
        --config.data.data_dir=DATA_DIR [--config.model.tokenizer=PATH/tokenizer]

Without a tokenizer the run makes the word tokenizer of the dataset (its vocabulary replaces the text
encoder's ``vocab_size`` and token ids below, which fit the tests' tiny CLIP tokenizer).
"""

from rewardedit_jax.configs import default
from rewardedit_jax.configs.components import tiny_text_config, unet_config, vae_config


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
    c.model.unet = unet_config([32, 32], [True, False], cross_attention_dim=32, attention_head_dim=4)
    c.model.vae = vae_config([16, 32], norm_num_groups=8)
    c.model.text_encoder = tiny_text_config(531)
    return c
