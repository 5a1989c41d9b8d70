"""The CLIP tokenizer of Stable Diffusion, for instructions and reward feedback texts.

A thin wrapper over transformers' ``CLIPTokenizer`` read from a ``tokenizer/`` folder, local or remote (never
the hub) that produces what the text encoder takes: ``int32`` ids of shape (B, max_length), padded to
``max_length`` and truncated, with start/end-of-text tokens (docs/sources.md, "Text encoder and tokenizer":
length 77, pad to max length, truncate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rewardedit_jax.io import ConversionError, local_copy, to_path

REQUIRED_FILES = ("vocab.json", "merges.txt")  # the slow-tokenizer files (transformers 4.x layout)
FAST_FILE = "tokenizer.json"  # what transformers 5 saves instead
_UNSET_MAX_LENGTH = 10**6  # transformers' stand-in for "no model_max_length" is far larger


class Tokenizer:
    """``tokenizer(texts) -> np.int32 (B, max_length)``; also ``tokenize``, the same."""

    def __init__(self, clip_tokenizer, max_length: int):
        self.backend = clip_tokenizer
        self.max_length = int(max_length)

    @property
    def bos_token_id(self) -> int:
        return int(self.backend.bos_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.backend.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.backend.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.backend)

    def tokenize(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids (B, max_length), int32; a single string gives B = 1."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("tokenize expects a string or a sequence of strings")
        encoded = self.backend(texts, padding="max_length", max_length=self.max_length, truncation=True)
        ids = np.asarray(encoded["input_ids"], dtype=np.int32)
        return ids.reshape(len(texts), self.max_length)

    __call__ = tokenize


def load_tokenizer(folder: str | os.PathLike, *, max_length: int | None = None) -> Tokenizer:
    """Load the CLIP tokenizer of ``folder`` (a ``tokenizer/`` folder, or a pipeline folder holding one).

    ``max_length`` defaults to the tokenizer's ``model_max_length`` (77 for Stable Diffusion). A remote
    folder is downloaded for transformers, which reads only local files.
    """
    folder = to_path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: tokenizer folder not found")

    def has_files(f: Path) -> bool:
        return (f / FAST_FILE).is_file() or all((f / name).is_file() for name in REQUIRED_FILES)

    if not has_files(folder) and (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not has_files(folder):
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        raise ConversionError(
            f"{folder}: not a CLIP tokenizer folder (no {FAST_FILE}, no {', '.join(missing)})"
        )
    from transformers import CLIPTokenizer

    try:
        with local_copy(folder) as local:
            backend = CLIPTokenizer.from_pretrained(str(local), local_files_only=True)
    except Exception as e:
        message = " ".join(str(e).split())[:300]
        raise ConversionError(f"{folder}: cannot load the CLIP tokenizer ({message})") from None
    if max_length is None:
        max_length = backend.model_max_length
        if max_length is None or max_length >= _UNSET_MAX_LENGTH:
            raise ConversionError(
                f"{folder}: tokenizer_config.json sets no model_max_length; pass max_length (77 for SD)"
            )
    if max_length < 2:
        raise ConversionError(
            f"{folder}: max_length {max_length} leaves no room for start/end-of-text tokens"
        )
    return Tokenizer(backend, max_length)


def _byte_chars() -> list[str]:
    """CLIP's byte -> printable-unicode table (GPT-2 byte-level BPE convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding as CLIP's tokenizer applies it: merge the best-ranked adjacent pair until none."""
    pieces = list(pieces)
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), pair) for pair in zip(pieces, pieces[1:])]
        rank, (a, b) = min(pairs)
        if rank == len(ranks):
            break
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and pieces[i] == a and pieces[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def write_word_tokenizer(folder: str | Path, words: Sequence[str], *, max_length: int = 77) -> Path:
    """Write a small CLIP BPE tokenizer that spells each of ``words`` as one token.

    For models trained from scratch on a closed vocabulary (the synthetic offline demo): byte tokens plus
    the merges that spell each (lower-case) word as one token, CLIP's special tokens, ``model_max_length``.
    Loads with ``load_tokenizer`` and with transformers' ``CLIPTokenizer`` (so exported pipelines carry
    it).
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = _byte_chars()
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    seen_tokens = set(tokens)
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w.lower() for w in words if w}):
        spelled = [byte_chars[b] for b in word.encode("utf-8")]
        pieces = _bpe([*spelled[:-1], spelled[-1] + "</w>"], ranks)
        # Each merge added ranks after all earlier ones, so it applies only where they no longer do: the
        # words already spelled as one token keep their spelling, and this one ends as one token.
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            if pieces[0] + pieces[1] not in seen_tokens:
                tokens.append(pieces[0] + pieces[1])
                seen_tokens.add(pieces[0] + pieces[1])
            pieces = _bpe(pieces, ranks)
    merges = sorted(ranks, key=ranks.__getitem__)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder
