"""The offline demo model (docs/demo.md): rewardedit_jax/configs/demo.py, which the demo
(``python -m rewardedit_jax.demo``) uses; it ships in the package. This file trains its stage 1 on its own:

    tfds build synthetic_edit/16px --imports rewardedit_jax.tfds_builders --data_dir D \
        --file_format array_record
    python -m rewardedit_jax.train --config configs/demo.py --workdir W --config.data.data_dir=D

The word tokenizer of the dataset is made for the run (``model.tokenizer=''``) and saved in ``W/model``.
"""

from rewardedit_jax.configs.demo import get_config

__all__ = ["get_config"]
