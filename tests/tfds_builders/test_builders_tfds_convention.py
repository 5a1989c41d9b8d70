"""TFDS-convention tests (`tfds.testing.DatasetBuilderTestCase`) of the four builders on their dummy data.

Each builds its dataset from `tfds_builders/<name>/dummy_data/` (written by
`python -m rewardedit_jax.data.fixtures tfds_builders`) and checks the split sizes; the manual fixtures
contain one bad entry per skip reason, so the sizes are the kept counts (Real-Edit's, whose build checks the
benchmark's layout, is complete: 80 photos x 7 edit types). The classes under test are the packaged ones;
the dummy data stay in the checkout's builder folders, out of the wheel.
"""

from pathlib import Path

import tensorflow_datasets as tfds

from rewardedit_jax.tfds_builders.instruct_pix2pix import instruct_pix2pix_dataset_builder
from rewardedit_jax.tfds_builders.real_edit import real_edit_dataset_builder
from rewardedit_jax.tfds_builders.reward_edit import reward_edit_dataset_builder
from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

BUILDER_FOLDERS = Path(__file__).resolve().parents[2] / "tfds_builders"


def dummy_data(name: str) -> str:
    return str(BUILDER_FOLDERS / name / "dummy_data")


class RewardEditTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = reward_edit_dataset_builder.Builder
    EXAMPLE_DIR = dummy_data("reward_edit")
    SPLITS = {"train": 4}  # 12 keys: 4 good, 8 bad (one per skip reason).


class RewardEditFirstPairTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = reward_edit_dataset_builder.Builder
    EXAMPLE_DIR = dummy_data("reward_edit")
    BUILDER_CONFIG_NAMES_TO_TEST = [
        reward_edit_dataset_builder.RewardEditConfig(name="first_pair", multi_pair_policy="first")
    ]
    SPLITS = {"train": 5}  # The folder with two pairs is resolved to its first pair.


class InstructPix2PixTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = instruct_pix2pix_dataset_builder.Builder
    EXAMPLE_DIR = dummy_data("instruct_pix2pix")
    SPLITS = {"train": 3}


class RealEditTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = real_edit_dataset_builder.Builder
    EXAMPLE_DIR = dummy_data("real_edit")
    SPLITS = {"test": 560}


class SyntheticEditTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic_edit_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SPLITS = {"train": 48, "test": 16}
    SKIP_CHECKSUMS = True
    EXAMPLE_DIR = str(BUILDER_FOLDERS / "synthetic_edit")  # No dummy data needed.
