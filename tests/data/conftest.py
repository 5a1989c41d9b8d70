"""Fixtures for the data tests: the repository root on sys.path (for `tfds_builders`), built datasets."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data_dir holding `synthetic_edit/tiny` (48 train / 16 test, 32x32), built in this process."""
    from tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

    data_dir = tmp_path_factory.mktemp("tfds_data")
    builder = synthetic_edit_dataset_builder.Builder(
        config="tiny", data_dir=data_dir, file_format="array_record"
    )
    builder.download_and_prepare()
    return data_dir
