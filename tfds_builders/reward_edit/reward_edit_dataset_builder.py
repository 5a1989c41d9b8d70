"""The builder folder of `reward_edit` in a checkout: ``tfds build tfds_builders/reward_edit``.

The builder is the packaged one (rewardedit_jax/tfds_builders/reward_edit). TFDS loads a builder folder as
the module ``reward_edit.reward_edit_dataset_builder`` and takes the one builder class defined in it, so
this module defines a subclass; ``skip_registration`` leaves the name ``reward_edit`` to the packaged class
when both are imported in one process.
"""

from rewardedit_jax.tfds_builders.reward_edit import reward_edit_dataset_builder as _packaged
from rewardedit_jax.tfds_builders.reward_edit.reward_edit_dataset_builder import RewardEditConfig

__all__ = ["Builder", "RewardEditConfig"]


class Builder(_packaged.Builder, skip_registration=True):
    __doc__ = _packaged.Builder.__doc__
