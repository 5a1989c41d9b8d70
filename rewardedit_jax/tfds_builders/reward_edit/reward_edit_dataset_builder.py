"""`reward_edit`: RewardEdit20K rewards joined with their InstructPix2Pix images (manual download).

    tfds build reward_edit --imports rewardedit_jax.tfds_builders --manual_dir M \
        --data_dir D --file_format array_record
    tfds build tfds_builders/reward_edit ...  # the same, from a checkout

Options go in a JSON config, e.g. `--config '{"name": "first_pair", "multi_pair_policy": "first"}'`
(fields of `RewardEditConfig`). Detection, joins and validation: `rewardedit_jax/data/manual.py`.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from rewardedit_jax.data import manual
from rewardedit_jax.tfds_builders.manual_builder import ManualBuilder, edit_pair_features, reward_features


@dataclasses.dataclass
class RewardEditConfig(tfds.core.BuilderConfig):
    """See `rewardedit_jax.data.manual.RewardEditOptions` for the fields."""

    join: str = "auto"
    multi_pair_policy: str = manual.MULTI_PAIR_SKIP
    image_dir: str | None = None
    rewards_file: str = manual.REWARDS_FILE

    def options(self) -> manual.RewardEditOptions:
        return manual.RewardEditOptions(self.join, self.multi_pair_policy, self.image_dir, self.rewards_file)


class Builder(ManualBuilder):
    """RewardEdit20K: InstructPix2Pix edits with 3 reward scores and feedback texts (GPT-4o labels)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        RewardEditConfig(name="default", description="Detected layout and join; skip ambiguous.")
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put in the manual directory `RewardEdit_20K.json` (from the gated HF dataset of the paper) and one
    InstructPix2Pix clip-filtered image source, either directly or in one subfolder:
    - the original folders (`<folder>/prompt.json`, `<seed>_0.jpg`, `<seed>_1.jpg`), or
    - the HF parquet shards (`*.parquet`, also accepted under `data/`).
    See docs/data.md.
    """

    def example_features(self):
        return {**edit_pair_features(), **reward_features()}

    def manual_examples(self, manual_dir, summary):
        return manual.reward_edit_examples(manual_dir, self.builder_config.options(), summary)
