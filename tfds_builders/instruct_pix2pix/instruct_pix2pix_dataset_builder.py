"""The builder folder of `instruct_pix2pix` in a checkout: ``tfds build tfds_builders/instruct_pix2pix``.

The builder is the packaged one (rewardedit_jax/tfds_builders/instruct_pix2pix). TFDS loads a builder folder
as the module ``instruct_pix2pix.instruct_pix2pix_dataset_builder`` and takes the one builder class defined
in it, so this module defines a subclass; ``skip_registration`` leaves the name ``instruct_pix2pix`` to the
packaged class when both are imported in one process.
"""

from rewardedit_jax.tfds_builders.instruct_pix2pix import instruct_pix2pix_dataset_builder as _packaged
from rewardedit_jax.tfds_builders.instruct_pix2pix.instruct_pix2pix_dataset_builder import (
    InstructPix2PixConfig,
)

__all__ = ["Builder", "InstructPix2PixConfig"]


class Builder(_packaged.Builder, skip_registration=True):
    __doc__ = _packaged.Builder.__doc__
