"""`tfds build` of every builder as a user runs it, from the fixture manual directories: from the checkout's
builder folders (`tfds build tfds_builders/<name>`), and by name with the packaged builders imported.

The builds run as subprocesses in parallel (each imports TensorFlow, ~10 s); the fixtures hold one bad
entry per skip reason, and the build summary recorded in the dataset metadata must count exactly those.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rewardedit_jax.data import fixtures, manual, synthetic

REPO_ROOT = Path(__file__).resolve().parents[2]
TFDS = str(Path(sys.executable).with_name("tfds"))
FIRST_PAIR = json.dumps({"name": "first_pair", "multi_pair_policy": "first"})
BUILDS = {
    "reward_edit": ["tfds_builders/reward_edit", "--manual_dir", "tfds_builders/reward_edit/dummy_data"],
    "reward_edit_first_pair": [
        "tfds_builders/reward_edit",
        "--manual_dir",
        "tfds_builders/reward_edit/dummy_data",
        "--config",
        FIRST_PAIR,
    ],
    "instruct_pix2pix": [
        "tfds_builders/instruct_pix2pix",
        "--manual_dir",
        "tfds_builders/instruct_pix2pix/dummy_data",
    ],
    "real_edit": ["tfds_builders/real_edit", "--manual_dir", "tfds_builders/real_edit/dummy_data"],
    "synthetic_edit": ["tfds_builders/synthetic_edit", "--config", "tiny"],
    # By name, registered by importing the package's builders: how an installed package builds.
    "synthetic_edit_by_name": ["synthetic_edit/tiny", "--imports", "rewardedit_jax.tfds_builders"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """data_dir and the output of each `tfds build`, run in parallel."""
    data_dir = tmp_path_factory.mktemp("tfds_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    procs = {}
    for name, args in BUILDS.items():
        command = [TFDS, "build", *args, "--data_dir", str(data_dir / name), "--file_format", "array_record"]
        procs[name] = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"tfds build {name} failed:\n{outputs[name][-4000:]}"
    return data_dir, outputs


def summary_of(data_dir, path):
    return tfds.builder_from_directory(data_dir / path).info.metadata["build_summary"]


def counts(summary):
    return {"kept": summary["kept"], "skipped": summary["skipped"]}


def test_reward_edit_build_keeps_and_skips_exactly_the_fixture_entries(built, tmp_path):
    data_dir, outputs = built
    expected = fixtures.write_reward_edit_dummy_data(tmp_path)
    summary = summary_of(data_dir, "reward_edit/reward_edit/default/1.0.0")["train"]
    assert counts(summary) == expected
    assert (
        summary["join"]["strategy"] == "folder" and summary["image_source"]["root"] == "clip-filtered-dataset"
    )
    assert "reward_edit [train] build summary: kept 4, skipped 8" in outputs["reward_edit"]

    builder = tfds.builder_from_directory(data_dir / "reward_edit/reward_edit/default/1.0.0")
    assert builder.info.splits["train"].num_examples == 4
    examples = list(builder.as_data_source("train"))
    assert sorted(e["key"].decode() for e in examples) == ["0000001", "0000002", "0000003", "0000004"]
    example = examples[0]
    assert example["source_image"].shape == example["edited_image"].shape == (32, 32, 3)
    np.testing.assert_array_equal(example["reward_scores"], np.float32([4.5, 3, 2.5]))
    assert [t.decode() for t in example["reward_texts"]] == list(fixtures.GOOD_TEXTS)


def test_reward_edit_json_config_picks_the_first_pair_of_ambiguous_folders(built):
    data_dir, _ = built
    summary = summary_of(data_dir, "reward_edit_first_pair/reward_edit/first_pair/1.0.0")["train"]
    assert summary["kept"] == 5 and summary["multi_pair_policy"] == "first"
    assert "ambiguous_pairs" not in summary["skipped"]


def test_instruct_pix2pix_build_counts(built, tmp_path):
    data_dir, _ = built
    expected = fixtures.write_instruct_pix2pix_dummy_data(tmp_path)
    summary = summary_of(data_dir, "instruct_pix2pix/instruct_pix2pix/default/1.0.0")["train"]
    assert counts(summary) == expected


def test_real_edit_build_counts_and_edit_types(built, tmp_path):
    data_dir, _ = built
    expected = fixtures.write_real_edit_dummy_data(tmp_path)
    path = data_dir / "real_edit/real_edit/1.0.0"
    assert counts(summary_of(data_dir, "real_edit/real_edit/1.0.0")["test"]) == expected
    examples = list(tfds.builder_from_directory(path).as_data_source("test"))
    assert {e["edit_type"].decode() for e in examples} == set(manual.REAL_EDIT_TYPES)


def test_synthetic_edit_build_has_both_splits_and_all_features(built):
    data_dir, _ = built
    version = synthetic.DATASET_VERSION
    builder = tfds.builder_from_directory(data_dir / f"synthetic_edit/synthetic_edit/tiny/{version}")
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 48, "test": 16}
    reward_edit_features = [
        "key",
        "source_image",
        "edited_image",
        "instruction",
        "reward_scores",
        "reward_texts",
    ]
    assert set(builder.info.features) == {*reward_edit_features, "target_image", "edit_type"}
    example = builder.as_data_source("test")[0]
    np.testing.assert_array_equal(example["edited_image"], example["target_image"])


def test_a_build_by_name_gives_the_builder_folders_dataset(built):
    data_dir, _ = built
    version = synthetic.DATASET_VERSION
    by_folder = tfds.builder_from_directory(data_dir / f"synthetic_edit/synthetic_edit/tiny/{version}")
    by_name = tfds.builder_from_directory(data_dir / f"synthetic_edit_by_name/synthetic_edit/tiny/{version}")
    assert (
        by_name.info.module_name
        == "rewardedit_jax.tfds_builders.synthetic_edit.synthetic_edit_dataset_builder"
    )
    for split in ("train", "test"):
        a, b = by_folder.as_data_source(split), by_name.as_data_source(split)
        assert len(a) == len(b)
        assert all(
            a[i]["key"] == b[i]["key"] and a[i]["instruction"] == b[i]["instruction"] for i in range(len(a))
        )
        np.testing.assert_array_equal(a[3]["source_image"], b[3]["source_image"])


def test_the_builder_folders_hold_the_packaged_builders():
    import rewardedit_jax.tfds_builders as packaged
    from tfds_builders.real_edit import real_edit_dataset_builder as real_edit_folder
    from tfds_builders.synthetic_edit import synthetic_edit_dataset_builder as synthetic_edit_folder

    for name, folder in (("synthetic_edit", synthetic_edit_folder), ("real_edit", real_edit_folder)):
        assert issubclass(folder.Builder, packaged.BUILDERS[name]) and folder.Builder.name == name
        # Both imported in one process: the name stays registered to the packaged class.
        assert tfds.builder_cls(name) is packaged.BUILDERS[name]
