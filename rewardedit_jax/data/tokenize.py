"""Tokenizers for the input pipeline: anything mapping a list of strings to int32 token ids (B, 77).

The instruction and the joined feedback text are tokenized like SD 1.5's prompt: CLIP tokenizer, padded
to the maximum length 77, truncated (docs/sources.md, "Text encoder and tokenizer").
`rewardedit_jax.tokenizer.load_tokenizer` gives one for a folder; any other callable with the same contract
works, e.g. `WordTokenizer` in tests.
Tokenizers must be picklable when the pipeline uses worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MAX_LENGTH = 77

Tokenizer = Callable[[Sequence[str]], np.ndarray]


def tokenize(tokenizer: Tokenizer, texts: Sequence[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """Calls a tokenizer and checks its output is int32 (len(texts), max_length)."""
    ids = np.asarray(tokenizer(list(texts)))
    if ids.shape != (len(texts), max_length) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"tokenizer returned {ids.dtype} {ids.shape}, expected int ({len(texts)}, {max_length})"
        )
    return ids.astype(np.int32, copy=False)


class WordTokenizer:
    """Lower-case whitespace words -> ids over a vocabulary that grows deterministically from a word list.

    Ids: 0 pad, 1 start, 2 end, 3 unknown, then the given words in order. A stand-in for tests and for tiny
    text encoders trained on the synthetic data's small vocabulary; not a CLIP tokenizer.
    """

    PAD, START, END, UNKNOWN = 0, 1, 2, 3

    def __init__(self, words: Sequence[str] = (), max_length: int = MAX_LENGTH):
        self.max_length = max_length
        self.vocab = {}
        for word in words:
            self.vocab.setdefault(word.lower().strip(".,;:"), len(self.vocab) + 4)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        ids = np.full((len(texts), self.max_length), self.PAD, np.int32)
        for row, text in enumerate(texts):
            words = [self.vocab.get(w.strip(".,;:"), self.UNKNOWN) for w in text.lower().split()]
            tokens = [self.START, *words[: self.max_length - 2], self.END]
            ids[row, : len(tokens)] = tokens
        return ids
