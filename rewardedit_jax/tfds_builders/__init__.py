"""The TFDS dataset builders: ``reward_edit``, ``instruct_pix2pix``, ``real_edit`` and ``synthetic_edit``.

Importing this package registers the four with TFDS, which is how ``tfds build`` finds them by name in an
installed package (needs the ``data`` extra):

    tfds build synthetic_edit/32px --imports rewardedit_jax.tfds_builders --data_dir D \
        --file_format array_record

A checkout also has each as a folder, ``tfds build tfds_builders/<name>`` (its ``dummy_data/`` are the test
fixtures). Training and evaluation read built datasets without these modules, and without TensorFlow.
"""

from rewardedit_jax.tfds_builders.instruct_pix2pix import instruct_pix2pix_dataset_builder
from rewardedit_jax.tfds_builders.real_edit import real_edit_dataset_builder
from rewardedit_jax.tfds_builders.reward_edit import reward_edit_dataset_builder
from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

BUILDERS = {
    "instruct_pix2pix": instruct_pix2pix_dataset_builder.Builder,
    "real_edit": real_edit_dataset_builder.Builder,
    "reward_edit": reward_edit_dataset_builder.Builder,
    "synthetic_edit": synthetic_edit_dataset_builder.Builder,
}
