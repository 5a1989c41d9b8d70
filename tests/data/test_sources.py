"""Detecting the InstructPix2Pix image source in a manual directory and joining RewardEdit keys to it."""

import json

import pytest

from rewardedit_jax.data import fixtures, sources
from rewardedit_jax.data.validation import ManualDataError


def parquet_rows(count, *, with_paths=True, start_seed=100):
    rows = []
    for i in range(count):
        seed = start_seed + i
        row = {
            "edit_prompt": f"edit {i}",
            "source": fixtures.small_jpeg(2 * seed),
            "edited": fixtures.small_jpeg(2 * seed + 1),
        }
        if with_paths:
            row["source_path"] = f"{i:07d}/{seed}_0.jpg"
            row["edited_path"] = f"{i:07d}/{seed}_1.jpg"
        rows.append(row)
    return rows


def test_detects_folders_directly_in_the_manual_dir(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    source = sources.detect_image_source(tmp_path)
    assert isinstance(source, sources.FolderSource) and source.root == tmp_path


def test_detects_folders_in_one_subfolder_and_under_train(tmp_path):
    fixtures.write_ip2p_folder(tmp_path / "pix2pix-clip-filtered-hf" / "train", "0000001", ["11"])
    (tmp_path / "notes").mkdir()
    source = sources.detect_image_source(tmp_path)
    assert source.root == tmp_path / "pix2pix-clip-filtered-hf" / "train"


def test_detects_parquet_shards_directly_or_under_data(tmp_path):
    fixtures.write_parquet_shard(
        tmp_path / "hf" / "data" / "train-00001-of-00002.parquet", parquet_rows(2, start_seed=5)
    )
    fixtures.write_parquet_shard(tmp_path / "hf" / "data" / "train-00000-of-00002.parquet", parquet_rows(3))
    source = sources.detect_image_source(tmp_path)
    assert isinstance(source, sources.ParquetSource)
    assert [s.name for s in source.shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert source.num_rows == 5
    assert [row.row_index for row in source.rows([1, 4])] == [1, 4]


def test_refuses_to_guess_between_two_image_sources(tmp_path):
    fixtures.write_ip2p_folder(tmp_path / "a", "0000001", ["11"])
    fixtures.write_ip2p_folder(tmp_path / "b", "0000001", ["11"])
    with pytest.raises(ManualDataError, match=r"Several subfolders .* \['a', 'b'\].*image_dir"):
        sources.detect_image_source(tmp_path)
    assert sources.detect_image_source(tmp_path, image_dir="b").root == tmp_path / "b"


def test_refuses_a_folder_holding_both_layouts(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    fixtures.write_parquet_shard(tmp_path / "x.parquet", parquet_rows(1))
    with pytest.raises(ManualDataError, match="both parquet shards and InstructPix2Pix folders"):
        sources.detect_image_source(tmp_path)


def test_reports_a_manual_dir_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDataError, match="No InstructPix2Pix images found"):
        sources.detect_image_source(tmp_path)
    with pytest.raises(ManualDataError, match="image_dir"):
        sources.detect_image_source(tmp_path, image_dir="../elsewhere")


def test_find_file_looks_in_the_manual_dir_and_one_subfolder(tmp_path):
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "RewardEdit_20K.json").write_text("{}")
    assert sources.find_file(tmp_path, "RewardEdit_20K.json") == tmp_path / "rewards" / "RewardEdit_20K.json"
    with pytest.raises(ManualDataError, match="not found"):
        sources.find_file(tmp_path, "real_edit_instruct.json")


def test_folder_pairs_are_sorted_and_keep_incomplete_pairs(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["9", "10"], missing=["10_1"])
    pairs = sources.FolderSource(tmp_path).pairs("0000001")
    assert [(p.seed, p.source_path.name, p.edited_path) for p in pairs] == [
        ("9", "9_0.jpg", tmp_path / "0000001" / "9_1.jpg"),
        ("10", "10_0.jpg", None),
    ]


def test_join_by_folder_name(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    fixtures.write_ip2p_folder(tmp_path, "0000002", ["12"])
    plan = sources.plan_join(["0000001", "0000002", "0000003"], sources.FolderSource(tmp_path))
    assert plan.strategy == "folder" and set(plan.locations) == {"0000001", "0000002"}
    assert plan.summary(3) == {
        "strategy": "folder",
        "matched": 2,
        "unmatched": 1,
        "matched_by_strategy": {"folder": 2, "seed": 0},
    }


@pytest.mark.parametrize("seeds_json", [True, False])
def test_join_folders_by_seed_with_or_without_seeds_json(tmp_path, seeds_json):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11", "12"])
    fixtures.write_ip2p_folder(tmp_path, "0000002", ["21"])
    if seeds_json:
        (tmp_path / "seeds.json").write_text(json.dumps([["0000001", ["11", "12"]], ["0000002", ["21"]]]))
    plan = sources.plan_join(["12", "21", "99"], sources.FolderSource(tmp_path))
    assert plan.strategy == "seed"
    assert plan.locations == {"12": [("0000001", "12")], "21": [("0000002", "21")]}


def test_join_parquet_by_row_index_when_paths_are_absent(tmp_path):
    fixtures.write_parquet_shard(tmp_path / "a.parquet", parquet_rows(3, with_paths=False))
    fixtures.write_parquet_shard(tmp_path / "b.parquet", parquet_rows(2, with_paths=False))
    plan = sources.plan_join(["0", "4", "5", "0004", "x"], sources.detect_image_source(tmp_path))
    assert plan.strategy == "row_index" and plan.locations == {"0": [0], "4": [4]}


def test_join_parquet_by_seed_in_the_image_path(tmp_path):
    fixtures.write_parquet_shard(tmp_path / "a.parquet", parquet_rows(3, start_seed=100000))
    plan = sources.plan_join(["100002", "100000"], sources.detect_image_source(tmp_path))
    assert plan.strategy == "seed" and plan.locations == {"100002": [2], "100000": [0]}


def test_auto_join_fails_when_several_strategies_match_and_explicit_join_resolves_it(tmp_path):
    fixtures.write_parquet_shard(tmp_path / "a.parquet", parquet_rows(3, start_seed=1))
    source = sources.detect_image_source(tmp_path)
    with pytest.raises(ManualDataError, match=r"several join strategies .*'row_index': 1, 'seed': 1"):
        sources.plan_join(["2"], source)
    assert sources.plan_join(["2"], source, "seed").locations == {"2": [1]}
    assert sources.plan_join(["2"], source, "row_index").locations == {"2": [2]}


def test_auto_join_fails_when_nothing_matches(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    with pytest.raises(ManualDataError, match="No key of the reward file"):
        sources.plan_join(["nope"], sources.FolderSource(tmp_path))
