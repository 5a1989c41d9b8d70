"""The word tokenizer of a dataset: for text encoders trained from scratch on a closed vocabulary.

A model trained from random init (``init_from=''``, e.g. configs/demo.py on `synthetic_edit`) has no CLIP
tokenizer to inherit. With ``config.model.tokenizer=''`` the trainer makes one from the words of the dataset's
texts (instructions and reward texts), each word spelled as one token (``tokenizer.write_word_tokenizer``),
and saves it with the model; words it has not seen are still spelled, byte by byte.

The words are those of the first ``LIMIT`` examples of every split (a closed vocabulary shows all its words
early; reading more costs time at every start) and of ``SAMPLING_TEXTS``. Everything is deterministic, so
every host of a multi-host run makes the same tokenizer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LIMIT = 4000  # examples read per split
# A generic failure of each perspective: the low condition the demo evaluates reward models with (1,1,1).
LOW_FEEDBACK = "The color is wrong.; Unrequested regions changed.; The image is noisy and blurry."
# Condition texts that samplers are given and a dataset's own texts may lack: "None; None; None" (the
# default feedback of `edit` and `evaluate`, RewardEdit20K's text for perfect scores) and LOW_FEEDBACK.
SAMPLING_TEXTS = ("None; None; None", LOW_FEEDBACK)
_PUNCTUATION = ".,;:!?"


def text_words(text: str | bytes) -> set[str]:
    """The lower-case words of ``text``, without the punctuation around them."""
    text = text.decode() if isinstance(text, bytes) else str(text)
    return {w for w in (w.strip(_PUNCTUATION).lower() for w in text.split()) if w}


def dataset_words(name: str, data_dir: str | os.PathLike | None, *, limit: int = LIMIT) -> list[str]:
    """The sorted words of the texts of dataset ``name`` (first ``limit`` examples of each split) and of
    ``SAMPLING_TEXTS``."""
    from rewardedit_jax.data.pipeline import load_builder, load_data_source

    words: set[str] = set()
    for split in load_builder(name, data_dir).info.splits:
        source, _ = load_data_source(name, split, data_dir)
        for i in range(min(len(source), limit)):
            example = source[i]
            for text in [example.get("instruction", ""), *example.get("reward_texts", [])]:
                words |= text_words(text)
    for text in SAMPLING_TEXTS:
        words |= text_words(text)
    return sorted(words)


def write_dataset_tokenizer(folder: str | os.PathLike, name: str, data_dir: str | os.PathLike | None) -> Path:
    """Write the word tokenizer of dataset ``name`` to ``folder``."""
    from rewardedit_jax.tokenizer import write_word_tokenizer

    return write_word_tokenizer(folder, dataset_words(name, data_dir))


def dataset_tokenizer(name: str, data_dir: str | os.PathLike | None):
    """The word tokenizer of dataset ``name``, loaded (``rewardedit_jax.tokenizer.Tokenizer``)."""
    from rewardedit_jax.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="rewardedit_tokenizer_") as tmp:
        return load_tokenizer(write_dataset_tokenizer(Path(tmp) / "tokenizer", name, data_dir))
