"""The builder folder of `real_edit` in a checkout: ``tfds build tfds_builders/real_edit``.

The builder is the packaged one (rewardedit_jax/tfds_builders/real_edit). TFDS loads a builder folder as the
module ``real_edit.real_edit_dataset_builder`` and takes the one builder class defined in it, so this module
defines a subclass; ``skip_registration`` leaves the name ``real_edit`` to the packaged class when both are
imported in one process.
"""

from rewardedit_jax.tfds_builders.real_edit import real_edit_dataset_builder as _packaged

__all__ = ["Builder"]


class Builder(_packaged.Builder, skip_registration=True):
    __doc__ = _packaged.Builder.__doc__
