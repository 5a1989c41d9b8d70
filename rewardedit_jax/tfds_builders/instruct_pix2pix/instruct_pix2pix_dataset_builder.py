"""`instruct_pix2pix`: every InstructPix2Pix image pair (stage-1 data; manual download).

    tfds build instruct_pix2pix --imports rewardedit_jax.tfds_builders --manual_dir M \
        --data_dir D --file_format array_record
    tfds build tfds_builders/instruct_pix2pix ...  # the same, from a checkout

The image source (original folders or HF parquet shards) may sit in M or in one subfolder of it; a JSON
config `{"name": "custom", "image_dir": "..."}` picks it explicitly. See `rewardedit_jax/data/manual.py`.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from rewardedit_jax.data import manual
from rewardedit_jax.tfds_builders.manual_builder import ManualBuilder, edit_pair_features


@dataclasses.dataclass
class InstructPix2PixConfig(tfds.core.BuilderConfig):
    """image_dir: the image source's folder relative to the manual directory; None detects it."""

    image_dir: str | None = None


class Builder(ManualBuilder):
    """InstructPix2Pix clip-filtered (instruction, source, edited) triplets, one example per image pair."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [InstructPix2PixConfig(name="default", description="Detected image source.")]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put one InstructPix2Pix clip-filtered image source in the manual directory, directly or in one
    subfolder: the original folders (`<folder>/prompt.json`, `<seed>_0.jpg`, `<seed>_1.jpg`) or the HF
    parquet shards (`*.parquet`, also accepted under `data/`). See docs/data.md.
    """
    HOMEPAGE = "https://www.timothybrooks.com/instruct-pix2pix"

    def example_features(self):
        return edit_pair_features()

    def manual_examples(self, manual_dir, summary):
        return manual.instruct_pix2pix_examples(manual_dir, summary, self.builder_config.image_dir)
