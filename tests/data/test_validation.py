"""Validation while building: score parsing, perspective counts, key safety, JSON errors, the summary."""

import math
import os

import numpy as np
import pytest

from rewardedit_jax.data import validation
from rewardedit_jax.data.validation import ManualDataError, Skip


def reason(fn, *args):
    with pytest.raises(Skip) as info:
        fn(*args)
    return info.value.reason


@pytest.mark.parametrize("value, expected", [(0, 0.0), (5, 5.0), (4.5, 4.5), ("3.5", 3.5), (" 2 ", 2.0)])
def test_parse_score_accepts_numbers_and_numeric_strings_in_range(value, expected):
    assert validation.parse_score(value) == expected


@pytest.mark.parametrize("value", ["abc", "", None, True, [], {}, math.nan, "nan"])
def test_parse_score_rejects_non_numeric(value):
    assert reason(validation.parse_score, value) == validation.SCORE_NOT_NUMERIC


@pytest.mark.parametrize("value", [7, -0.1, 5.01, "6", math.inf])
def test_parse_score_rejects_out_of_range(value):
    assert reason(validation.parse_score, value) == validation.SCORE_OUT_OF_RANGE


def entry(*scores, texts=("a", "b", "c")):
    return [{"Score": s, "Negative Prompt": t} for s, t in zip(scores, texts)]


def test_parse_rewards_returns_float32_scores_and_texts_in_perspective_order():
    scores, texts = validation.parse_rewards(entry(4.5, "3", 0, texts=(" a ", "b", "c")))
    assert scores.dtype == np.float32 and scores.tolist() == [4.5, 3.0, 0.0]
    assert texts == ("a", "b", "c")


@pytest.mark.parametrize(
    "value", [entry(5, 5), entry(5, 5, 5, 5, texts="abcd"), {}, "5,5,5", None, [1, 2, 3]]
)
def test_parse_rewards_rejects_wrong_perspective_count(value):
    assert reason(validation.parse_rewards, value) == validation.WRONG_PERSPECTIVE_COUNT


def test_parse_rewards_rejects_missing_feedback_text():
    value = entry(5, 5, 5)
    del value[1]["Negative Prompt"]
    assert reason(validation.parse_rewards, value) == validation.BAD_FEEDBACK_TEXT


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "\\\\server\\x", "C:/x", "", "a\x00b"])
def test_check_relative_key_rejects_keys_escaping_the_directory(key):
    assert reason(validation.check_relative_key, key) == validation.UNSAFE_KEY


def test_check_relative_key_normalizes_plain_keys():
    assert validation.check_relative_key("0000123") == "0000123"
    assert validation.check_relative_key("./train//0000123/") == "train/0000123"


def test_resolve_inside_refuses_links_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inside").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, root / "link_out")
    os.symlink(root / "inside", root / "link_in")
    assert validation.resolve_inside(root, "link_in") == (root / "inside").resolve()
    assert reason(validation.resolve_inside, root, "link_out") == validation.UNSAFE_KEY


def test_load_json_reports_file_line_and_column_of_malformed_json(tmp_path):
    path = tmp_path / "RewardEdit_20K.json"
    path.write_text('{"a": [1, 2,\n  }')
    with pytest.raises(ManualDataError, match=r"RewardEdit_20K.json is not valid JSON \(line 2, column 3\)"):
        validation.load_json(path)


def test_build_summary_counts_reasons_and_fails_when_nothing_is_kept(capsys):
    summary = validation.BuildSummary("reward_edit", "train")
    summary.skip("k1", Skip(validation.MISSING_IMAGE, "x"))
    summary.skip("k2", Skip(validation.MISSING_IMAGE))
    summary.skip("k3", Skip(validation.UNSAFE_KEY))
    assert summary.as_dict()["skipped"] == {"missing_image": 2, "unsafe_key": 1}
    with pytest.raises(ManualDataError, match="no example was kept"):
        summary.finish()
    summary.keep()
    assert summary.finish()["kept"] == 1
    assert "kept 1, skipped 3" in capsys.readouterr().out


def test_repeated_top_level_keys_are_reported(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"a": {"x": 1, "x": 2}, "b": 1, "a": 3}')
    value, duplicates = validation.load_json_with_duplicates(path)
    assert value == {"a": 3, "b": 1} and duplicates == ["a"]
