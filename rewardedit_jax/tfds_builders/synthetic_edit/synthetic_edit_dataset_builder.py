"""`synthetic_edit`: procedurally generated instruction edits with ground-truth rewards (no download).

    tfds build synthetic_edit --imports rewardedit_jax.tfds_builders --config 32px \
        --data_dir D --file_format array_record
    tfds build tfds_builders/synthetic_edit ...  # the same, from a checkout

Without `--config`, every config is built. The generator, its edits, corruptions and the reward formula
are documented in `rewardedit_jax/data/synthetic.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from rewardedit_jax.data import synthetic


@dataclasses.dataclass
class SyntheticEditConfig(tfds.core.BuilderConfig):
    """resolution: image side in pixels; num_train / num_test: examples per split."""

    resolution: int = 32
    num_train: int = 20_000
    num_test: int = 512
    corruption_fraction: float = synthetic.SyntheticConfig.corruption_fraction
    seed: int = 0

    def generator_config(self) -> synthetic.SyntheticConfig:
        return synthetic.SyntheticConfig(
            resolution=self.resolution, corruption_fraction=self.corruption_fraction, seed=self.seed
        )


def _config(name: str, note: str = ""):
    resolution, num_train, num_test = synthetic.BUILDER_CONFIGS[name]
    description = f"{resolution}x{resolution} images, {num_train} train / {num_test} test edits{note}."
    return SyntheticEditConfig(
        name=name, description=description, resolution=resolution, num_train=num_train, num_test=num_test
    )


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic RewardEdit-style edits: shapes, colours, backgrounds; imperfect train edits with rewards."""

    VERSION = tfds.core.Version(synthetic.DATASET_VERSION)
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "70% imperfect train edits; washed_out quality corruption; corruptions drawn with "
        "synthetic.CORRUPTION_WEIGHTS.",
    }
    BUILDER_CONFIGS = [
        _config("16px"),
        _config("32px", " (default)"),
        _config("64px"),
        _config("tiny", ", for tests"),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "32px"

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.resolution
        image = tfds.features.Image(shape=(size, size, 3), encoding_format="png")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "key": tfds.features.Text(),
                    "source_image": image,
                    "edited_image": image,
                    "target_image": image,
                    "instruction": tfds.features.Text(),
                    "edit_type": tfds.features.Text(),
                    "reward_scores": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                    "reward_texts": tfds.features.Sequence(tfds.features.Text(), length=3),
                }
            ),
            supervised_keys=None,
            homepage="https://arxiv.org/abs/2411.04713",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download.
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "test": self._generate_examples("test", config.num_test),
        }

    def _generate_examples(self, split: str, num_examples: int):
        generator_config = self.builder_config.generator_config()
        for index in range(num_examples):
            example = synthetic.generate(generator_config, split, index)
            yield example.key, example.as_tfds_example()
