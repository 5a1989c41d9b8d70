"""TPU slice variants of the SD 1.5 configs: ``--config configs/sd15_reward.py:v5e-16`` (or ``:v5p-8``).

The official global batch (per-GPU batch 4 x 4 accumulation steps, 128 with 8 GPUs; docs/sources.md,
"Training recipe") is kept; a variant only lays the run out on the slice. What the compile check
(``python -m rewardedit_jax.aot``, jax 0.10.2, libtpu 0.0.42.1) measured for the 256 px step from images,
per chip (docs/scaling.md has the full table, 512 px and the commands):

- ``v5e-16``: 16 chips of 16 GiB. The train state (fp32 parameters, Adam moments and EMA: 13.8 GB for the
  reward U-Net) cannot be replicated, so it is sharded over all 16 chips (``mesh.fsdp=16``, 830.7 MiB of
  state per chip); 8 images per chip. Stage 2: 5.99 GiB of 16 GiB, 8.62 TFLOP per step, 8.70 GiB of
  all-gathers per step; stage 1: 5.86 GiB, 8.48 TFLOP. With ``--num-slices K`` (``aot``) or K slices in a
  real job, ``mesh.dcn_data`` spreads the same layout over the slices (2 slices: 4.70 GiB per chip).
- ``v5p-8``: 4 chips of 95 GiB. The replicated state (12.88 GiB) fits, so plain data parallelism
  (``mesh.data=4``): 32 images per chip and one 465 MiB gradient all-reduce per step. Stage 2: 29.10 GiB
  of 95 GiB, 34.49 TFLOP per step; stage 1: 28.78 GiB, 33.94 TFLOP.
"""

VARIANTS = {
    "v5e-16": {"data": 1, "fsdp": 16, "tensor": 1},
    "v5p-8": {"data": 4, "fsdp": 1, "tensor": 1},
}


def apply(c, variant: str):
    """``c`` laid out for the TPU slice ``variant`` ('' = unchanged)."""
    if not variant:
        return c
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; known: {', '.join(VARIANTS)}")
    for axis, size in VARIANTS[variant].items():
        c.mesh[axis] = size
    return c
