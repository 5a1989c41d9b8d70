"""Datasets and the input pipeline (docs/data.md).

- `synthetic`: the procedural `synthetic_edit` data with ground-truth rewards.
- `sources`, `manual`, `validation`, `images`: reading and validating the manually downloaded datasets for
  the TFDS builders in `rewardedit_jax.tfds_builders` (RewardEdit20K, InstructPix2Pix, Real-Edit).
- `pipeline`: the grain input pipeline (`make_dataset` with its `DataOptions`, `make_global_batch`);
  `tokenize`: tokenizers; `vocabulary`: the word tokenizer of a dataset (random-init runs with
  `model.tokenizer=''`).
- `latent_cache`: a dataset encoded once by the frozen VAE and text encoder (`precompute`, command
  `python -m rewardedit_jax.data.precompute`) and its reader `make_latent_dataset`.

The pipeline names are re-exported lazily, so the builders can import the data modules without importing
grain or JAX.
"""

import importlib

_LAZY = {
    "DataOptions": "pipeline",
    "make_dataset": "pipeline",
    "make_grain_dataset": "pipeline",
    "make_global_batch": "pipeline",
    "global_batches": "pipeline",
    "load_data_source": "pipeline",
    "EditExampleTransform": "pipeline",
    "make_latent_dataset": "latent_cache",
    "load_latent_source": "latent_cache",
    "load_empty_prompt": "latent_cache",
    "LatentCacheError": "latent_cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
