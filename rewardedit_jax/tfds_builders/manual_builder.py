"""What the builders of manually downloaded data (`reward_edit`, `instruct_pix2pix`, `real_edit`) share.

Each reads one split from the manual directory through `rewardedit_jax.data.manual`, which counts what it
keeps and skips in a `BuildSummary`; the summary goes into the dataset's metadata (`build_summary`), so a
built dataset says what the build left out and why.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from rewardedit_jax.data import validation

OFFICIAL_HOMEPAGE = "https://github.com/bytedance/Multi-Reward-Editing"


def image_feature() -> tfds.features.Image:
    """An RGB image of any size, stored as the source encoded it."""
    return tfds.features.Image(shape=(None, None, 3))


def edit_pair_features() -> dict[str, tfds.features.FeatureConnector]:
    """An InstructPix2Pix edit: its key, the source and edited images and the instruction."""
    return {
        "key": tfds.features.Text(),
        "source_image": image_feature(),
        "edited_image": image_feature(),
        "instruction": tfds.features.Text(),
    }


def reward_features() -> dict[str, tfds.features.FeatureConnector]:
    """The three perspectives' reward scores (0..5) and feedback texts."""
    return {
        "reward_scores": tfds.features.Tensor(shape=(validation.NUM_PERSPECTIVES,), dtype=np.float32),
        "reward_texts": tfds.features.Sequence(tfds.features.Text(), length=validation.NUM_PERSPECTIVES),
    }


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One split (`SPLIT`) of `example_features()`, read from the manual directory by `manual_examples`."""

    SPLIT = "train"
    HOMEPAGE = OFFICIAL_HOMEPAGE

    @abc.abstractmethod
    def example_features(self) -> Mapping[str, tfds.features.FeatureConnector]:
        """The features of an example, by name."""

    @abc.abstractmethod
    def manual_examples(
        self, manual_dir: Path, summary: validation.BuildSummary
    ) -> Iterator[tuple[str, Any]]:
        """The (key, example) pairs of the split, each kept or skipped example counted in `summary`."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(dict(self.example_features())),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {self.SPLIT: self._generate_examples(dl_manager.manual_dir)}

    def _generate_examples(self, manual_dir):
        summary = validation.BuildSummary(self.name, self.SPLIT)
        yield from self.manual_examples(manual_dir, summary)
        self.info.metadata.setdefault("build_summary", {})[self.SPLIT] = summary.finish()
