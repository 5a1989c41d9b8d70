"""The answer parser: tolerant of JSON and dict-like text, strict about ranges, never evaluates code."""

import pytest

from rewardedit_jax.judge.parse import (
    EvalAnswer,
    LabelAnswer,
    ParseError,
    parse_answer,
    parse_eval_answer,
    parse_label_answer,
)


def test_json_label_answer_parses():
    assert parse_label_answer('{"score": 3, "feedback": "the hat is blue, not red"}') == LabelAnswer(
        3.0, "the hat is blue, not red"
    )


@pytest.mark.parametrize(
    "score_text, expected",
    [("4", 4.0), ("4.0", 4.0), ("4.5", 4.5), (".5", 0.5), ('"4"', 4.0), ('"3.5"', 3.5), ('"4/5"', 4.0)]
    + [("0", 0.0)],
)
def test_integer_and_decimal_scores_are_accepted(score_text, expected):
    assert parse_eval_answer('{"answer": "yes", "score": ' + score_text + "}").score == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{'answer': 'Yes', 'score': 3.5}", EvalAnswer("yes", 3.5)),
        ("{'following': True, 'score': 4}", EvalAnswer("yes", 4.0)),
        ("{following: no, score: 2}", EvalAnswer("no", 2.0)),
        ('{"Answer": "NO.", "Score": "1"}', EvalAnswer("no", 1.0)),
    ],
)
def test_python_dict_like_answers_are_accepted(text, expected):
    assert parse_eval_answer(text) == expected


@pytest.mark.parametrize("key", ["following", "consistent", "clear"])
def test_official_protocol_key_names_are_accepted(key):
    assert parse_eval_answer("{'" + key + "': 'yes', 'score': 4.0}") == EvalAnswer("yes", 4.0)


def test_code_fence_and_surrounding_prose_are_ignored():
    text = 'Here is my judgment:\n```json\n{"score": 5, "feedback": "None"}\n```\nThanks.'
    assert parse_label_answer(text) == LabelAnswer(5.0, "None")


def test_apostrophes_and_braces_inside_strings_survive():
    text = """{'score': 2, 'feedback': "the woman's face {left} changed"}"""
    assert parse_label_answer(text).feedback == "the woman's face {left} changed"


@pytest.mark.parametrize("feedback", ['"None"', '"none."', '""', "null", "None", '"N/A"', '"No issues"'])
def test_no_failure_feedback_is_normalised_to_None(feedback):
    assert parse_label_answer('{"score": 5, "feedback": ' + feedback + "}").feedback == "None"


def test_feedback_synonym_keys_and_lists():
    assert parse_label_answer('{"score": 1, "Negative Prompt": "blurry"}').feedback == "blurry"
    assert parse_label_answer('{"score": 1, "issues": ["blurry", "seam"]}').feedback == "blurry; seam"


@pytest.mark.parametrize(
    "text, mode",
    [
        ('{"score": 6, "feedback": "None"}', "label"),
        ('{"score": -1, "feedback": "None"}', "label"),
        ('{"score": 5.01, "feedback": "None"}', "label"),
        ('{"score": NaN, "feedback": "None"}', "label"),
        ('{"score": "high", "feedback": "None"}', "label"),
        ('{"score": true, "feedback": "None"}', "label"),
        ('{"feedback": "None"}', "label"),
        ('{"score": 3}', "label"),
        ('{"answer": "maybe", "score": 3}', "eval"),
        ('{"score": 3}', "eval"),
        ("I think it follows the instruction, 4/5.", "eval"),
        ("", "eval"),
        ("{'score': 4, 'answer': 'yes'", "eval"),
    ],
)
def test_out_of_range_missing_or_malformed_answers_are_parse_errors(text, mode):
    with pytest.raises(ParseError):
        parse_answer(text, mode)


def test_parser_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    hostile = "{'score': __import__('os').system('touch " + str(marker) + "'), 'feedback': 'x'}"
    with pytest.raises(ParseError):
        parse_label_answer(hostile)
    with pytest.raises(ParseError):
        parse_label_answer("{'score': (lambda: 4)(), 'feedback': 'x'}")
    assert not marker.exists()


def test_first_valid_object_wins_over_earlier_noise():
    assert parse_eval_answer('Scale {0..5}. Answer: {"answer": "yes", "score": 4}').score == 4.0
