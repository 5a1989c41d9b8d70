"""The manual-directory datasets (RewardEdit20K, InstructPix2Pix, Real-Edit): kept and skipped per reason."""

import json
import os

import numpy as np
import pytest

from rewardedit_jax.data import fixtures, images, manual
from rewardedit_jax.data.validation import BuildSummary, ManualDataError


def run(generator_fn, *args):
    summary = BuildSummary("test", "train")
    examples = dict(generator_fn(*args, summary))
    return examples, summary.as_dict()


def reward_edit(manual_dir, **options):
    return run(
        lambda d, s: manual.reward_edit_examples(d, manual.RewardEditOptions(**options), s), manual_dir
    )


def counts(summary):
    return {"kept": summary["kept"], "skipped": summary["skipped"]}


def test_reward_edit_fixture_with_bad_entries_gives_exact_counts(tmp_path):
    expected = fixtures.write_reward_edit_dummy_data(tmp_path)
    examples, summary = reward_edit(tmp_path)
    assert counts(summary) == expected
    assert sorted(examples) == ["0000001", "0000002", "0000003", "0000004"]
    assert summary["join"] == {
        "strategy": "folder",
        "matched": 7,
        "unmatched": 1,
        "matched_by_strategy": {"folder": 7, "seed": 0},
    }
    assert summary["image_source"] == {"kind": "folders", "root": "clip-filtered-dataset"}
    example = examples["0000002"]
    assert example["key"] == "0000002" and example["instruction"] == "edit number 2"
    np.testing.assert_array_equal(example["reward_scores"], np.float32([4.5, 3, 2.5]))
    assert example["reward_texts"] == list(fixtures.GOOD_TEXTS)
    source_file = tmp_path / "clip-filtered-dataset" / "0000002" / "12_0.jpg"
    assert example["source_image"] == source_file.read_bytes()  # Stored byte for byte.


def test_reward_edit_first_pair_policy_resolves_ambiguous_folders(tmp_path):
    fixtures.write_reward_edit_dummy_data(tmp_path)
    examples, summary = reward_edit(tmp_path, multi_pair_policy="first")
    assert summary["kept"] == 5 and "ambiguous_pairs" not in summary["skipped"]
    assert (
        examples["0000010"]["source_image"]
        == (tmp_path / "clip-filtered-dataset/0000010/20_0.jpg").read_bytes()
    )


def test_reward_edit_json_inside_the_image_folder_root(tmp_path):
    """The other way round: the JSON sits among the InstructPix2Pix folders, which sit in a subfolder."""
    fixtures.write_ip2p_folder(tmp_path / "ip2p", "0000001", ["11"])
    (tmp_path / "ip2p" / "RewardEdit_20K.json").write_text(
        json.dumps({"0000001": fixtures.reward_entry([5, 5, 5])})
    )
    examples, summary = reward_edit(tmp_path)
    assert list(examples) == ["0000001"] and summary["rewards_file"] == "ip2p/RewardEdit_20K.json"


def test_reward_edit_refuses_folder_links_out_of_the_manual_dir(tmp_path):
    outside = tmp_path / "outside"
    fixtures.write_ip2p_folder(outside, "0000001", ["11"])
    manual_dir = tmp_path / "manual"
    fixtures.write_ip2p_folder(manual_dir, "0000002", ["12"])
    os.symlink(outside / "0000001", manual_dir / "0000001")
    rewards = {"0000001": fixtures.reward_entry([5, 5, 5]), "0000002": fixtures.reward_entry([5, 5, 5])}
    (manual_dir / "RewardEdit_20K.json").write_text(json.dumps(rewards))
    examples, summary = reward_edit(manual_dir, join="folder")
    assert list(examples) == ["0000002"]
    assert summary["skipped"] == {"unsafe_key": 1}


def test_reward_edit_refuses_image_links_out_of_the_manual_dir(tmp_path):
    manual_dir = tmp_path / "manual"
    fixtures.write_ip2p_folder(manual_dir, "0000001", ["11"])
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(fixtures.small_jpeg(0))
    (manual_dir / "0000001" / "11_1.jpg").unlink()
    os.symlink(secret, manual_dir / "0000001" / "11_1.jpg")
    (manual_dir / "RewardEdit_20K.json").write_text(json.dumps({"0000001": fixtures.reward_entry([5, 5, 5])}))
    examples, summary = reward_edit(manual_dir)
    assert examples == {} and summary["skipped"] == {"unsafe_key": 1}


def test_reward_edit_from_parquet_by_row_index_with_bad_rows(tmp_path):
    good = [
        {"edit_prompt": f"edit {i}", "source": fixtures.small_jpeg(i), "edited": fixtures.small_jpeg(i + 50)}
        for i in range(4)
    ]
    good[1]["edited"] = fixtures.corrupt(good[1]["edited"])
    good[2]["source"] = None
    good[3]["edit_prompt"] = ""
    fixtures.write_parquet_shard(tmp_path / "data" / "train-00000-of-00001.parquet", good)
    rewards = {str(i): fixtures.reward_entry([5, 4, 3]) for i in range(5)}
    (tmp_path / "RewardEdit_20K.json").write_text(json.dumps(rewards))
    examples, summary = reward_edit(tmp_path)
    assert list(examples) == ["0"] and examples["0"]["instruction"] == "edit 0"
    assert summary["skipped"] == {
        "missing_image": 1,
        "missing_instruction": 1,
        "unmatched_key": 1,
        "unreadable_image": 1,
    }
    assert summary["join"]["strategy"] == "row_index" and summary["image_source"]["kind"] == "parquet"


def test_reward_edit_skips_keys_repeated_in_the_json(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    fixtures.write_ip2p_folder(tmp_path, "0000002", ["12"])
    entry = json.dumps(fixtures.reward_entry([5, 5, 5]))
    (tmp_path / "RewardEdit_20K.json").write_text(
        f'{{"0000001": {entry}, "0000002": {entry}, "0000001": {entry}}}'
    )
    examples, summary = reward_edit(tmp_path)
    assert list(examples) == ["0000002"] and summary["skipped"] == {"duplicate_key": 1}


def test_reward_edit_fails_clearly_on_malformed_json(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    (tmp_path / "RewardEdit_20K.json").write_text('{"0000001": [')
    with pytest.raises(ManualDataError, match=r"RewardEdit_20K.json is not valid JSON \(line 1"):
        reward_edit(tmp_path)
    (tmp_path / "RewardEdit_20K.json").write_text("[1, 2]")
    with pytest.raises(ManualDataError, match="must hold a JSON object"):
        reward_edit(tmp_path)


def test_reward_edit_fails_when_nothing_is_kept(tmp_path):
    fixtures.write_ip2p_folder(tmp_path, "0000001", ["11"])
    (tmp_path / "RewardEdit_20K.json").write_text(json.dumps({"0000001": fixtures.reward_entry([9, 9, 9])}))
    with pytest.raises(ManualDataError, match=r"(?s)no example was kept.*score_out_of_range: 1"):
        reward_edit(tmp_path)


def test_instruct_pix2pix_fixture_gives_exact_counts_and_one_example_per_pair(tmp_path):
    expected = fixtures.write_instruct_pix2pix_dummy_data(tmp_path)
    examples, summary = run(manual.instruct_pix2pix_examples, tmp_path)
    assert counts(summary) == expected
    assert sorted(examples) == ["0000001/11", "0000001/12", "0000002/21"]
    assert examples["0000002/21"]["instruction"] == "add a hat"


def test_instruct_pix2pix_from_parquet_keys_rows_by_index(tmp_path):
    rows = [{"edit_prompt": "a", "source": fixtures.small_jpeg(1), "edited": fixtures.small_jpeg(2)}] * 3
    fixtures.write_parquet_shard(tmp_path / "s.parquet", rows)
    examples, summary = run(manual.instruct_pix2pix_examples, tmp_path)
    assert sorted(examples) == ["0", "1", "2"] and summary["kept"] == 3


def real_edit(manual_dir, **kwargs):
    return run(lambda d, s: manual.real_edit_examples(d, s, **kwargs), manual_dir)


def test_real_edit_fixture_is_the_benchmark_layout(tmp_path):
    expected = fixtures.write_real_edit_dummy_data(tmp_path)
    examples, summary = real_edit(tmp_path)
    assert counts(summary) == expected == {"kept": 560, "skipped": {}}
    assert len(examples) == manual.REAL_EDIT_EDITS == 80 * 7
    assert examples["0.jpg/4"] == {
        "image_id": "0.jpg",
        "image": (tmp_path / "Real-Edit" / "0.jpg").read_bytes(),
        "instruction": "background edit of the photo",
        "edit_type": "Background",
    }
    assert summary["expected"] == "80 images x 7 edit types"
    for i in range(80):
        assert [examples[f"{i}.jpg/{j}"]["edit_type"] for j in range(7)] == list(manual.REAL_EDIT_TYPES)


def test_real_edit_skips_are_counted_with_the_layout_check_off(tmp_path):
    expected = fixtures.write_real_edit_defective_data(tmp_path)
    examples, summary = real_edit(tmp_path, expected_images=None)
    assert counts(summary) == expected
    assert sorted(examples) == [f"0.jpg/{i}" for i in range(7)] + [f"1.jpg/{i}" for i in (0, 1, 2, 4, 5, 6)]
    assert "expected" not in summary


def test_real_edit_defective_data_fails_naming_what_differs(tmp_path):
    fixtures.write_real_edit_defective_data(tmp_path)
    with pytest.raises(ManualDataError) as error:
        real_edit(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"{tmp_path / 'real_edit_instruct.json'}: Real-Edit is 80 images x 7 edit types = 560 edits, "
        "but this data gives 13 edits: 4 images, not 80; 1.jpg misses Texture (unknown_edit_type); "
        "2.jpg misses every edit type (unreadable_image); 3.jpg misses every edit type (missing_image); "
        "unexpected edit types 'Lighting' (1.jpg/3); "
        "skipped missing_image 1, unknown_edit_type 1, unreadable_image 2"
    )


def _edit_json(root, change):
    path = root / manual.REAL_EDIT_FILE
    instructions = json.loads(path.read_text())
    change(instructions)
    path.write_text(json.dumps(instructions))


def _drop_style(instructions):
    instructions["5.jpg"] = instructions["5.jpg"][:6]


def _repeat_local(instructions):
    instructions["6.jpg"].append("Local. Instruction: make the cup blue")


def _relabel_texture(instructions):
    instructions["7.jpg"][3] = "Lighting. Instruction: make it brighter"


def _drop_image(instructions):
    del instructions["79.jpg"]


def _extra_image(instructions):
    instructions["80.jpg"] = fixtures.real_edit_instructions()


def _drop_style_everywhere(instructions):
    for i in range(10):
        instructions[f"{i}.jpg"] = instructions[f"{i}.jpg"][:6]


@pytest.mark.parametrize(
    "change, kept, named",
    [
        (_drop_style, 559, "5.jpg misses Style"),
        (_repeat_local, 561, "6.jpg has Local more than once"),
        (
            _relabel_texture,
            559,
            "7.jpg misses Texture (unknown_edit_type); unexpected edit types 'Lighting' (7.jpg/3); "
            "skipped unknown_edit_type 1",
        ),
        (_drop_image, 553, "but this data gives 553 edits: 79 images, not 80"),
        (_extra_image, 560, "80.jpg misses every edit type (missing_image)"),
        (
            _drop_style_everywhere,
            550,
            "0.jpg misses Style; 1.jpg misses Style; 2.jpg misses Style; 3.jpg misses Style; "
            "4.jpg misses Style; 5.jpg misses Style; 6.jpg misses Style; 7.jpg misses Style; "
            "... and 2 more images",
        ),
    ],
)
def test_real_edit_layout_errors_name_the_difference(tmp_path, change, kept, named):
    fixtures.write_real_edit_dummy_data(tmp_path)
    _edit_json(tmp_path, change)
    with pytest.raises(ManualDataError, match=f"gives {kept} edits: ") as error:
        real_edit(tmp_path)
    assert named in str(error.value) and "\n" not in str(error.value)
    if change is _extra_image:
        assert "81 images, not 80" in str(error.value)


def test_real_edit_files_may_sit_in_one_subfolder(tmp_path):
    fixtures.write_real_edit_dummy_data(tmp_path / "RewardEdit20K")
    examples, summary = real_edit(tmp_path)
    assert summary["kept"] == 560 and summary["images_dir"] == "RewardEdit20K/Real-Edit"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Local. Instruction: make the car red", ("Local", "make the car red")),
        ("Remove: remove the dog", ("Remove", "remove the dog")),
        ("3. Style. Instruction: Make it a Van Gogh painting", ("Style", "Make it a Van Gogh painting")),
        ("texture. change the table to marble", ("Texture", "change the table to marble")),
    ],
)
def test_parse_real_edit_instruction_formats(text, expected):
    assert manual.parse_real_edit_instruction(text) == expected


def test_checked_image_bytes_converts_non_rgb_images_to_png(tmp_path):
    from PIL import Image

    gray = tmp_path / "g.png"
    Image.new("L", (8, 6), 128).save(gray)
    data = images.read_checked_image(gray)
    assert data != gray.read_bytes() and images.decode_rgb(data).shape == (6, 8, 3)
