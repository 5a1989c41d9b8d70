"""`real_edit`: the Real-Edit benchmark, 80 photos x 7 edit instructions (manual download).

    tfds build real_edit --imports rewardedit_jax.tfds_builders --manual_dir M \
        --data_dir D --file_format array_record
    tfds build tfds_builders/real_edit ...  # the same, from a checkout

M holds `real_edit_instruct.json` and the `Real-Edit/` folder (or one subfolder of M holds them); the build
checks that they give the 80 x 7 = 560 edits of the benchmark.
Parsing and validation: `rewardedit_jax/data/manual.py`.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from rewardedit_jax.data import manual
from rewardedit_jax.tfds_builders.manual_builder import ManualBuilder, image_feature


class Builder(ManualBuilder):
    """Real-Edit: real photos with one instruction per edit type (Local, Remove, Add, Texture, ...)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # The build fails unless the manual data holds exactly this many photos, each with one instruction of
    # every edit type (80 x 7 = 560 edits); the error names the images, edit types and counts that differ.
    EXPECTED_IMAGES = manual.REAL_EDIT_IMAGES
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put `real_edit_instruct.json` and the `Real-Edit/` image folder (distributed with RewardEdit20K on the
    HF hub) in the manual directory, or together in one subfolder of it. See docs/data.md.
    """
    SPLIT = "test"

    def example_features(self):
        return {
            "image_id": tfds.features.Text(),
            "image": image_feature(),
            "instruction": tfds.features.Text(),
            "edit_type": tfds.features.Text(),
        }

    def manual_examples(self, manual_dir, summary):
        return manual.real_edit_examples(manual_dir, summary, expected_images=self.EXPECTED_IMAGES)
