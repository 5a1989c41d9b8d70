"""rewardedit-jax: multi-reward conditioned instruction-based image editing in JAX/Flax."""

from rewardedit_jax import platforms as _platforms

__version__ = "0.1.0"

# Before any jax backend starts: an installed libtpu on a machine without a TPU would otherwise make
# every command probe for one (see platforms.py).
_platforms.skip_absent_tpu()
