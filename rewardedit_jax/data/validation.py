"""Validation of manually downloaded data while a dataset is built, with counted skip reasons.

The official PyTorch code silently turned an unreadable image into a black one
(official `dataset.py`; docs/sources.md, "Training recipe").
Here every example that cannot be used is skipped with a named reason, the reasons are counted in a
`BuildSummary`, the build prints the summary and records it in the dataset's metadata
(`builder.info.metadata["build_summary"]`), and the build fails with a clear message when the input
JSON is malformed (`ManualDataError`) or nothing is kept.

Skip reasons (the keys of `BuildSummary.skipped`):

| reason | meaning |
|---|---|
| `unsafe_key` | the key is absolute, contains `..`, or resolves (through links) outside the image root |
| `duplicate_key` | the key appears more than once in the JSON file (every occurrence is skipped) |
| `unmatched_key` | no image pair found for the key with the chosen join strategy |
| `ambiguous_pairs` | the key's folder holds several image pairs and no policy picks one |
| `missing_image` | an image file (or the image bytes of a parquet row) is missing |
| `unreadable_image` | an image does not decode (corrupt or truncated file) |
| `missing_instruction` | no usable instruction text (`prompt.json` missing, unreadable or without `edit`) |
| `wrong_perspective_count` | the reward entry is not a list of exactly 3 perspectives |
| `score_not_numeric` | a `Score` is missing, not a number (e.g. `"abc"`), or NaN |
| `score_out_of_range` | a `Score` is outside 0..5 (e.g. 7) |
| `bad_feedback_text` | a `Negative Prompt` is missing or not a string |
| `bad_instruction` | a Real-Edit instruction string cannot be parsed |
| `unknown_edit_type` | a Real-Edit instruction does not start with one of the 7 edit types |
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

NUM_PERSPECTIVES = 3
PERSPECTIVES = ("following", "preserving", "quality")
MIN_SCORE = 0.0
MAX_SCORE = 5.0

UNSAFE_KEY = "unsafe_key"
DUPLICATE_KEY = "duplicate_key"
UNMATCHED_KEY = "unmatched_key"
AMBIGUOUS_PAIRS = "ambiguous_pairs"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
MISSING_INSTRUCTION = "missing_instruction"
WRONG_PERSPECTIVE_COUNT = "wrong_perspective_count"
SCORE_NOT_NUMERIC = "score_not_numeric"
SCORE_OUT_OF_RANGE = "score_out_of_range"
BAD_FEEDBACK_TEXT = "bad_feedback_text"
BAD_INSTRUCTION = "bad_instruction"
UNKNOWN_EDIT_TYPE = "unknown_edit_type"


class Skip(Exception):
    """Raised for one example that cannot be used; `reason` is one of the reasons above."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ManualDataError(ValueError):
    """The manual directory cannot be built from at all (malformed JSON, no image source, nothing kept)."""


class BuildSummary:
    """Kept count, skipped counts per reason, a few examples per reason, and free-form build facts."""

    MAX_EXAMPLES_PER_REASON = 5

    def __init__(self, dataset: str, split: str):
        self.dataset = dataset
        self.split = split
        self.kept = 0
        self.skipped: collections.Counter[str] = collections.Counter()
        self.skipped_examples: dict[str, list[str]] = collections.defaultdict(list)
        self.facts: dict[str, Any] = {}

    def keep(self) -> None:
        self.kept += 1

    def skip(self, key: str, error: Skip) -> None:
        self.skipped[error.reason] += 1
        examples = self.skipped_examples[error.reason]
        if len(examples) < self.MAX_EXAMPLES_PER_REASON:
            examples.append(f"{key}: {error.detail}" if error.detail else str(key))

    def attempt(self, key: str, make: Callable[..., T], *args: Any) -> T | None:
        """``make(*args)``, counted as kept; None, counted as a skip of ``key``, when it raises
        :class:`Skip`."""
        try:
            made = make(*args)
        except Skip as e:
            self.skip(key, e)
            return None
        self.keep()
        return made

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable form, as recorded in the dataset metadata."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "kept": self.kept,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": self.total_skipped,
            "skipped_examples": {k: list(v) for k, v in sorted(self.skipped_examples.items())},
            **self.facts,
        }

    def format(self) -> str:
        lines = [
            f"{self.dataset} [{self.split}] build summary: kept {self.kept}, skipped {self.total_skipped}"
        ]
        for reason, count in sorted(self.skipped.items()):
            first = "; ".join(self.skipped_examples[reason][:2])
            lines.append(f"  skipped {reason}: {count}  (e.g. {first})")
        for name, value in self.facts.items():
            lines.append(f"  {name}: {json.dumps(value, sort_keys=True)}")
        return "\n".join(lines)

    def finish(self) -> dict[str, Any]:
        """Prints the summary; raises `ManualDataError` when nothing was kept. Returns `as_dict()`."""
        print("\n" + self.format(), flush=True)
        if self.kept == 0:
            raise ManualDataError(
                f"{self.dataset} [{self.split}]: no example was kept; nothing to build.\n{self.format()}"
            )
        return self.as_dict()


def load_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file; a malformed file raises `ManualDataError` naming the file, line and column."""
    return load_json_with_duplicates(path)[0]


def load_json_with_duplicates(path: str | os.PathLike) -> tuple[Any, list[str]]:
    """(value, keys repeated in the top-level object) of a JSON file; `ManualDataError` if malformed.

    `json.load` silently keeps the last of repeated keys; the builders skip such keys instead.
    """
    path = Path(path)
    repeated: list[list[str]] = [[]]

    def pairs_hook(pairs):
        # Called for every object, innermost first, so the last call is the top-level object.
        seen: dict[str, Any] = {}
        duplicates = []
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        repeated[0] = duplicates
        return seen

    try:
        with path.open("rb") as f:
            value = json.load(f, object_pairs_hook=pairs_hook)
        return value, (sorted(set(repeated[0])) if isinstance(value, dict) else [])
    except json.JSONDecodeError as e:
        raise ManualDataError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    except UnicodeDecodeError as e:
        raise ManualDataError(f"{path} is not valid UTF-8 JSON: {e}") from e


def parse_score(value: Any) -> float:
    """A score in 0..5: a JSON number or a numeric string. Booleans, NaN and other text are not numeric."""
    if isinstance(value, bool) or value is None:
        raise Skip(SCORE_NOT_NUMERIC, repr(value))
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise Skip(SCORE_NOT_NUMERIC, repr(value)) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise Skip(SCORE_NOT_NUMERIC, repr(value))
    if math.isnan(number):
        raise Skip(SCORE_NOT_NUMERIC, repr(value))
    if not MIN_SCORE <= number <= MAX_SCORE:
        raise Skip(SCORE_OUT_OF_RANGE, repr(value))
    return number


def parse_rewards(entry: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """One RewardEdit20K value (a list of 3 dicts with `Score` and `Negative Prompt`) -> scores, texts.

    Returns float32 scores (3,) in perspective order (following, preserving, quality) and the 3 texts.
    """
    if not isinstance(entry, Sequence) or isinstance(entry, (str, bytes)) or len(entry) != NUM_PERSPECTIVES:
        count = len(entry) if isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) else "n/a"
        raise Skip(WRONG_PERSPECTIVE_COUNT, f"{count} perspectives")
    scores, texts = [], []
    for perspective in entry:
        if not isinstance(perspective, Mapping):
            raise Skip(WRONG_PERSPECTIVE_COUNT, f"perspective is {type(perspective).__name__}, not an object")
        scores.append(parse_score(perspective.get("Score")))
        text = perspective.get("Negative Prompt")
        if not isinstance(text, str):
            raise Skip(BAD_FEEDBACK_TEXT, repr(text))
        texts.append(text.strip())
    return np.asarray(scores, np.float32), tuple(texts)


def check_relative_key(key: str) -> str:
    """A key used as a relative path: not empty, not absolute, no `..` part, no NUL. Returns it normalized."""
    if not isinstance(key, str) or not key or "\x00" in key:
        raise Skip(UNSAFE_KEY, repr(key))
    parts = key.replace("\\", "/").split("/")
    if key.startswith(("/", "\\")) or os.path.isabs(key) or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise Skip(UNSAFE_KEY, f"absolute path {key!r}")
    if any(part == ".." for part in parts):
        raise Skip(UNSAFE_KEY, f"'..' in {key!r}")
    return "/".join(part for part in parts if part not in ("", "."))


def resolve_inside(root: str | os.PathLike, relative: str) -> Path:
    """`root / relative` resolved through links; `Skip(unsafe_key)` if that leaves `root` (resolved)."""
    relative = check_relative_key(relative)
    root_resolved = Path(root).resolve()
    path = (root_resolved / relative).resolve()
    if path != root_resolved and root_resolved not in path.parents:
        raise Skip(UNSAFE_KEY, f"{relative!r} resolves outside {root_resolved}")
    return path
