"""Builds that must fail with a clear message: malformed JSON, nothing kept, no image source, Real-Edit
that is not 80 photos x 7 edit types."""

import json

import pytest
import tensorflow_datasets as tfds

from rewardedit_jax.data import fixtures
from rewardedit_jax.data.validation import ManualDataError
from rewardedit_jax.tfds_builders.real_edit import real_edit_dataset_builder
from rewardedit_jax.tfds_builders.reward_edit import reward_edit_dataset_builder


def build(builder_cls, manual_dir, data_dir):
    builder = builder_cls(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def test_malformed_reward_json_fails_the_build_naming_the_file(tmp_path):
    fixtures.write_ip2p_folder(tmp_path / "manual", "0000001", ["11"])
    (tmp_path / "manual" / "RewardEdit_20K.json").write_text('{"0000001": [{"Score": 5,')
    with pytest.raises(ManualDataError, match=r"RewardEdit_20K.json is not valid JSON \(line 1"):
        build(reward_edit_dataset_builder.Builder, tmp_path / "manual", tmp_path / "data")


def test_a_build_that_keeps_nothing_fails_with_the_summary(tmp_path):
    fixtures.write_ip2p_folder(tmp_path / "manual", "0000001", ["11"], corrupt_edited=["11"])
    rewards = {"0000001": fixtures.reward_entry([5, 5, 5])}
    (tmp_path / "manual" / "RewardEdit_20K.json").write_text(json.dumps(rewards))
    with pytest.raises(ManualDataError, match=r"(?s)no example was kept.*unreadable_image: 1"):
        build(reward_edit_dataset_builder.Builder, tmp_path / "manual", tmp_path / "data")


def test_a_manual_dir_without_images_fails_with_the_expected_layouts(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "RewardEdit_20K.json").write_text("{}")
    with pytest.raises(ManualDataError, match="No InstructPix2Pix images found"):
        build(reward_edit_dataset_builder.Builder, tmp_path / "manual", tmp_path / "data")


def test_malformed_real_edit_json_fails(tmp_path):
    fixtures.write_real_edit_dummy_data(tmp_path / "manual")
    (tmp_path / "manual" / "real_edit_instruct.json").write_text("not json")
    with pytest.raises(ManualDataError, match="real_edit_instruct.json is not valid JSON"):
        build(real_edit_dataset_builder.Builder, tmp_path / "manual", tmp_path / "data")


def test_real_edit_build_fails_unless_it_is_80_images_x_7_edit_types(tmp_path):
    fixtures.write_real_edit_dummy_data(tmp_path / "manual")
    path = tmp_path / "manual" / "real_edit_instruct.json"
    instructions = json.loads(path.read_text())
    instructions["12.jpg"].remove("Add. Instruction: add edit of the photo")
    path.write_text(json.dumps(instructions))
    with pytest.raises(
        ManualDataError, match=r"= 560 edits, but this data gives 559 edits: 12.jpg misses Add$"
    ):
        build(real_edit_dataset_builder.Builder, tmp_path / "manual", tmp_path / "data")
    assert not list((tmp_path / "data").glob("real_edit/*/dataset_info.json"))  # nothing half-built
