"""Prompts: packaged, pinned by digest, rendered into the request the protocol describes."""

import shutil

import pytest

from rewardedit_jax.judge.config import MODES, PERSPECTIVES
from rewardedit_jax.judge.prompts import PACKAGED_DIGESTS, PromptSet


def test_packaged_prompts_load_and_match_their_pinned_digest():
    prompts = PromptSet.load("v1")
    assert prompts.version == "v1"
    assert prompts.digest == PACKAGED_DIGESTS["v1"]
    assert set(prompts.templates) == {(m, p) for m in MODES for p in PERSPECTIVES}


@pytest.mark.parametrize("mode", MODES)
def test_each_prompt_names_its_perspective_and_the_json_contract(mode):
    prompts = PromptSet.load("v1")
    titles = {
        "following": "instruction following",
        "preserving": "detail preserving",
        "quality": "generation quality",
    }
    label_contract = '{"score": <integer 0-5>, "feedback"'
    contract = label_contract if mode == "label" else '{"answer": "yes" or "no", "score"'
    for perspective in PERSPECTIVES:
        text = prompts.render(mode, perspective, "turn the  sky\npink")
        assert f"Perspective: {titles[perspective]}." in text
        assert contract in text
        assert "JSON" in text  # required by response_format json_object


def test_quality_is_judged_on_the_edited_image_alone_in_eval_mode():
    prompts = PromptSet.load("v1")
    assert not prompts.uses_instruction("eval", "quality")
    assert prompts.uses_instruction("eval", "following") and prompts.uses_instruction("eval", "preserving")
    messages = prompts.messages("eval", "quality", "add a cat", ["data:image/png;base64,AAAA"], "high")
    assert "add a cat" not in messages[1]["content"][0]["text"]
    assert [c["type"] for c in messages[1]["content"]] == ["text", "image_url"]


def test_instruction_whitespace_is_collapsed():
    text = PromptSet.load("v1").render("label", "following", "  make\n the car   red ")
    assert 'Instruction: "make the car red"' in text


def test_custom_prompt_directory_is_versioned_by_content(tmp_path):
    import importlib.resources

    packaged = importlib.resources.files("rewardedit_jax.judge") / "prompts" / "v1"
    custom = tmp_path / "mine"
    custom.mkdir()
    for entry in packaged.iterdir():
        shutil.copyfile(str(entry), custom / entry.name)
    first = PromptSet.load(str(custom))
    assert first.version.startswith("mine-") and first.version != "v1"
    (custom / "label_quality.txt").write_text((custom / "label_quality.txt").read_text() + "\nBe strict.")
    assert PromptSet.load(str(custom)).version != first.version


def test_unknown_version_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prompt version"):
        PromptSet.load("v999")


def test_structured_output_schema_requested_per_mode():
    prompts = PromptSet.load("v1")
    label = prompts.response_format("label", "json_schema")
    assert label["type"] == "json_schema"
    assert label["json_schema"]["schema"]["required"] == ["score", "feedback"]
    eval_schema = prompts.response_format("eval", "json_schema")["json_schema"]["schema"]
    assert eval_schema["properties"]["answer"]["enum"] == ["yes", "no"]
    assert prompts.response_format("eval", "json_object") == {"type": "json_object"}
    assert prompts.response_format("eval", "none") is None
