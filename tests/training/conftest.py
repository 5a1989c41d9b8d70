"""Fixtures for the training tests: a tiny tokenizer, a built `synthetic_edit/tiny`, the tiny config."""

from __future__ import annotations

from pathlib import Path

import fixtures_train  # noqa: F401  (puts the repository root on sys.path)
import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    from fixtures_sd import save_tiny_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    save_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = synthetic_edit_dataset_builder.Builder(
        config="tiny", data_dir=data_dir, file_format="array_record"
    )
    builder.download_and_prepare()
    return data_dir
