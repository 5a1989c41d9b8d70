"""The builder folder of `synthetic_edit` in a checkout: ``tfds build tfds_builders/synthetic_edit``.

The builder is the packaged one (rewardedit_jax/tfds_builders/synthetic_edit). TFDS loads a builder folder
as the module ``synthetic_edit.synthetic_edit_dataset_builder`` and takes the one builder class defined in
it, so this module defines a subclass; ``skip_registration`` leaves the name ``synthetic_edit`` to the
packaged class when both are imported in one process.
"""

from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder as _packaged
from rewardedit_jax.tfds_builders.synthetic_edit.synthetic_edit_dataset_builder import SyntheticEditConfig

__all__ = ["Builder", "SyntheticEditConfig"]


class Builder(_packaged.Builder, skip_registration=True):
    __doc__ = _packaged.Builder.__doc__
