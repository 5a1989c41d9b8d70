"""The tokenizer wrapper gives CLIPTokenizer's ids, padded and truncated to 77, as int32 arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_sd import TINY_BOS_ID, TINY_EOS_ID, save_tiny_tokenizer, tiny_vocab

from rewardedit_jax.convert.weights import ConversionError
from rewardedit_jax.tokenizer import load_tokenizer

TEXTS = [
    "make the dog red",
    "Make  the CAT\tred!",
    "",
    "None; None; None",
    "add a hat, then make it night " * 12,  # far more than 77 tokens
    "naïve café ☕",  # bytes outside ASCII
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tiny_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def test_ids_equal_clip_tokenizer_with_max_length_padding_and_truncation(tokenizer_dir, tokenizer):
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    ids = tokenizer(TEXTS)
    assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), 77)
    for text, row in zip(TEXTS, ids):
        expected = reference(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert row.tolist() == expected, text


def test_ids_are_bpe_tokens_between_start_and_end_of_text_then_end_of_text_padding(tokenizer):
    vocab = tiny_vocab()
    row = tokenizer("Make the dog red!")[0]
    words = [vocab[w] for w in ("make</w>", "the</w>", "dog</w>", "red</w>", "!</w>")]
    assert row[:7].tolist() == [TINY_BOS_ID, *words, TINY_EOS_ID]
    assert (row[7:] == TINY_EOS_ID).all()
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == TINY_EOS_ID


def test_long_text_is_truncated_to_77_ending_with_end_of_text(tokenizer):
    row = tokenizer(TEXTS[4])[0]
    assert row[0] == TINY_BOS_ID and row[-1] == TINY_EOS_ID
    assert TINY_EOS_ID not in row[1:-1].tolist()


def test_single_string_gives_a_batch_of_one_and_max_length_can_be_overridden(tokenizer_dir, tokenizer):
    assert tokenizer.tokenize("the cat").shape == (1, 77)
    short = load_tokenizer(tokenizer_dir, max_length=8)
    np.testing.assert_array_equal(short("the cat")[0], tokenizer("the cat")[0, :8])


def test_pipeline_folder_resolves_its_tokenizer_subfolder(tokenizer_dir, tmp_path):
    save_tiny_tokenizer(tmp_path / "tokenizer")
    np.testing.assert_array_equal(
        load_tokenizer(tmp_path)("the cat"), load_tokenizer(tokenizer_dir)("the cat")
    )


@pytest.mark.parametrize("missing", ["vocab.json", "merges.txt"])
def test_folder_without_vocab_or_merges_is_an_error_naming_it(tmp_path, missing):
    save_tiny_tokenizer(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(
        ConversionError, match=f"{tmp_path}: not a CLIP tokenizer folder .no tokenizer.json, no {missing}"
    ):
        load_tokenizer(tmp_path)


def test_missing_folder_and_unset_max_length_are_errors(tmp_path):
    with pytest.raises(ConversionError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "absent")
    save_tiny_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["model_max_length"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="model_max_length"):
        load_tokenizer(tmp_path)
    assert load_tokenizer(tmp_path, max_length=77)("x").shape == (1, 77)


def test_word_tokenizer_spells_every_word_as_one_token(tmp_path):
    """Words that share prefixes and inner pairs ("an" in "change", "triangle") still end as one token,
    with CLIPTokenizer's merge order, and a sentence is its words between start and end of text."""
    from transformers import CLIPTokenizer

    from rewardedit_jax.data import synthetic
    from rewardedit_jax.tokenizer import write_word_tokenizer

    words = {w.lower() for texts in synthetic.TEMPLATES.values() for t in texts for w in t.split()}
    words = {w for w in words if not w.startswith("{")} | set(synthetic.SHAPES) | set(synthetic.COLORS)
    words |= {w for slot in synthetic.SLOTS for w in slot.split()} | {"an", "and", "changed", "naïve"}
    folder = write_word_tokenizer(tmp_path / "tok", sorted(words), max_length=16)
    backend = CLIPTokenizer.from_pretrained(str(folder))
    spelled = {w: backend.tokenize(w) for w in words}
    assert {w: len(t) for w, t in spelled.items()} == {w: 1 for w in words}
    decoded = {w: backend.decode(backend.convert_tokens_to_ids(t)).strip() for w, t in spelled.items()}
    assert decoded == {w: w for w in words}
    tok = load_tokenizer(folder)
    ids = tok("change the color of the triangle to yellow")[0]
    assert ids.shape == (16,)
    assert backend.convert_ids_to_tokens(ids[:10].tolist()) == [
        "<|startoftext|>",
        *(w + "</w>" for w in "change the color of the triangle to yellow".split()),
        "<|endoftext|>",
    ]
