"""rewardedit-jax: multi-reward conditioned instruction-based image editing in JAX/Flax."""

__version__ = "0.1.0"
