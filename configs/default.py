"""Every training config key with its default and meaning: rewardedit_jax/configs/default.py, the schema the
trainer checks every config against (it ships in the package). Other configs start from it.

    python -m rewardedit_jax.train --config configs/default.py --workdir DIR --config.key=value

(On its own this config trains nothing useful: it needs ``init_from`` and a dataset.)
"""

from rewardedit_jax.configs.default import get_config

__all__ = ["get_config"]
