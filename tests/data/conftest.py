"""Fixtures for the data tests: built datasets."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data_dir holding `synthetic_edit/tiny` (48 train / 16 test, 32x32), built in this process."""
    from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

    data_dir = tmp_path_factory.mktemp("tfds_data")
    builder = synthetic_edit_dataset_builder.Builder(
        config="tiny", data_dir=data_dir, file_format="array_record"
    )
    builder.download_and_prepare()
    return data_dir
