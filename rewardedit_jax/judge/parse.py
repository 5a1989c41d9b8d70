"""Tolerant, code-free parsing of the judge's answers.

The model is asked for a JSON object, but LVLMs (and the official Real-Edit protocol, which asks for "a small
dict") also return Python-dict-like text: single quotes, `True`/`None`, bare keys, a code fence or a sentence
around the object. This module accepts all of that without ever evaluating code (no `eval`, no
`ast.literal_eval`): the first `{...}` that is valid JSON, or that a small hand-written parser for flat
dict literals accepts, is the answer.

Accepted keys (case-insensitive, spaces/dashes/underscores alike):
- score: `score`, `rating`;
- yes/no (eval): `answer`, and the official protocol's `following`, `consistent`, `clear` (plus
  `consistency`, `clarity`, `preserving`, `quality`, `verdict`);
- failure points (label): `feedback`, `negative_prompt`, `failure_points`, `failures`, `issues`, `reason`.

Scores may be integers or decimals ("4", "4.", "4.5", ".5"), numbers or strings, also as a fraction or in
words ("4/5", "4 out of 5", "four"). In eval mode an answer with no braces at all may give its fields as
`key: value` text ("Following: yes", "Score: 4/5", one per line or separated by ",", ";" or ". "). A
score outside 0..5, a missing field or no object at all raises `ParseError`, which the judge records with the
raw answer: unlike the official parser (a regex for `'score': <digits>.<digits>` and a case-sensitive "yes"
substring, which drops integer, JSON-quoted and worded scores), nothing is ever dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable

MAX_ANSWER_CHARS = 20_000

SCORE_KEYS = ("score", "rating")
ANSWER_KEYS = (
    "answer",
    "following",
    "consistent",
    "clear",
    "consistency",
    "clarity",
    "preserving",
    "quality",
    "verdict",
)
FEEDBACK_KEYS = ("feedback", "negative_prompt", "failure_points", "failures", "issues", "reason")

# Feedback texts that mean "no failure point"; they are normalised to "None", as in the inference condition.
_NO_FAILURE = {"", "none", "n/a", "na", "no", "nothing", "no failure points", "no failure point", "no issues"}

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:/\s*5(?:\.0*)?)?\s*$")
_NUMBER_WORDS = {"zero": 0.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}
# A score given as text: a number or a number word, optionally "/5" or "out of 5" (or "five").
_SCORE_TEXT = re.compile(
    r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)|zero|one|two|three|four|five)"
    r"\s*(?:(?:/|out\s+of)\s*(?:5(?:\.0*)?|five))?\s*$",
    re.IGNORECASE,
)
# One `key: value` field of a plain-text answer, e.g. "**Score**: 4/5" or "- following = Yes."
_TEXT_FIELD = re.compile(
    r"^[\s\-*#>`\"']*([a-z][a-z _-]{0,30}?)[\s*`\"']*[:=][\s*`\"']*(.*?)[\s*`\"'.!]*$", re.IGNORECASE
)


class ParseError(ValueError):
    """The answer is not a usable judgment; the message says why."""


@dataclasses.dataclass(frozen=True)
class LabelAnswer:
    score: float
    feedback: str


@dataclasses.dataclass(frozen=True)
class EvalAnswer:
    answer: str  # "yes" or "no"
    score: float


def parse_answer(text: str | None, mode: str) -> LabelAnswer | EvalAnswer:
    if mode == "label":
        return parse_label_answer(text)
    if mode == "eval":
        return parse_eval_answer(text)
    raise ValueError(f"unknown mode {mode!r}")


def parse_label_answer(text: str | None) -> LabelAnswer:
    fields = _normalised_fields(text)
    score = _score(fields)
    key = _first_key(fields, FEEDBACK_KEYS)
    if key is None:
        raise ParseError(f"no feedback field (expected one of {', '.join(FEEDBACK_KEYS)})")
    return LabelAnswer(score=score, feedback=_feedback(fields[key]))


def parse_eval_answer(text: str | None) -> EvalAnswer:
    fields = _normalised_fields(text, plain_text=True)
    score = _score(fields)
    key = _first_key(fields, ANSWER_KEYS)
    if key is None:
        raise ParseError(f"no yes/no field (expected one of {', '.join(ANSWER_KEYS)})")
    return EvalAnswer(answer=_yes_no(fields[key]), score=score)


def extract_object(text: str | None) -> dict:
    """The first `{...}` in `text` that parses as a JSON object or a flat Python-dict-like literal."""
    if text is None or not text.strip():
        raise ParseError("empty answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise ParseError(f"answer longer than {MAX_ANSWER_CHARS} characters")
    for candidate in _braced_spans(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            value = _DictLiteralParser(candidate).parse()
        if isinstance(value, dict):
            return value
    raise ParseError("no JSON object or dict in the answer")


def _normalised_fields(text: str | None, plain_text: bool = False) -> dict:
    if plain_text and text is not None and text.strip() and "{" not in text and "}" not in text:
        obj = _text_fields(text)
    else:
        obj = extract_object(text)
    fields = {}
    for key, value in obj.items():
        norm = re.sub(r"[\s\-_]+", "_", str(key).strip().lower())
        fields.setdefault(norm, value)
    return fields


def _first_key(fields: dict, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in fields), None)


def _score(fields: dict) -> float:
    key = _first_key(fields, SCORE_KEYS)
    if key is None:
        raise ParseError("no score field")
    value = fields[key]
    if isinstance(value, bool) or value is None:
        raise ParseError(f"score {value!r} is not a number")
    if isinstance(value, (int, float)):
        score = float(value)
    elif isinstance(value, str) and (match := _SCORE_TEXT.match(value)):
        number = match.group(1).lower()
        score = _NUMBER_WORDS[number] if number in _NUMBER_WORDS else float(number)
    else:
        raise ParseError(f"score {value!r} is not a number")
    if not math.isfinite(score) or not 0.0 <= score <= 5.0:
        raise ParseError(f"score {value!r} outside 0..5")
    return score


def _yes_no(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        word = value.strip().strip(".!\"'").strip().lower()
        if word in ("yes", "y", "true"):
            return "yes"
        if word in ("no", "n", "false"):
            return "no"
    raise ParseError(f"answer {value!r} is not yes or no")


def _feedback(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "; ".join(v.strip() for v in value if v.strip())
    if not isinstance(value, str):
        raise ParseError(f"feedback {value!r} is not text")
    text = " ".join(value.split())
    if text.lower().rstrip(".") in _NO_FAILURE:
        return "None"
    return text


def _text_fields(text: str) -> dict:
    """The `key: value` fields of a plain-text answer, keys among the score and yes/no names only."""
    if len(text) > MAX_ANSWER_CHARS:
        raise ParseError(f"answer longer than {MAX_ANSWER_CHARS} characters")
    known = set(SCORE_KEYS) | set(ANSWER_KEYS)
    fields: dict = {}
    for segment in re.split(r"[\n;]|[,.]\s", text):
        match = _TEXT_FIELD.match(segment)
        if match is None:
            continue
        key = re.sub(r"[\s\-_]+", "_", match.group(1).strip().lower())
        if key in known:
            fields.setdefault(key, match.group(2).strip())
    if not fields:
        raise ParseError("no JSON object, dict or key: value fields in the answer")
    return fields


def _braced_spans(text: str):
    """Each balanced `{...}` substring, outermost first, in order; braces inside quotes do not count."""
    start = text.find("{")
    while start != -1:
        depth, quote, escaped = 0, None, False
        for pos in range(start, len(text)):
            char = text[pos]
            if quote:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == quote:
                    quote = None
            elif char in "\"'":
                # An apostrophe inside a bare word ("woman's") is not a quote.
                if char == "'" and pos > 0 and text[pos - 1].isalnum():
                    continue
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    yield text[start : pos + 1]
                    break
        start = text.find("{", start + 1)


class _DictLiteralParser:
    """Recursive-descent parser for dict-like literals: `{'score': 4, following: yes, "x": None}`.

    Values: single- or double-quoted strings (with backslash escapes), numbers, true/false/null in JSON or
    Python spelling, bare words (up to the next `,` or `}`), and nested dicts/lists of those. Returns None
    when the text is not such a literal. It builds plain data only; nothing is ever executed.
    """

    _BARE = {"true": True, "false": False, "null": None, "none": None}

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def parse(self):
        try:
            value = self._value(depth=0)
            self._space()
            return value if self.pos == len(self.text) and isinstance(value, dict) else None
        except (ParseError, IndexError):
            return None

    def _space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self) -> str:
        self._space()
        return self.text[self.pos]

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            raise ParseError(f"expected {char!r}")
        self.pos += 1

    def _value(self, depth: int):
        if depth > 8:
            raise ParseError("nested too deeply")
        char = self._peek()
        if char == "{":
            return self._dict(depth)
        if char == "[":
            return self._list(depth)
        if char in "\"'":
            return self._string()
        return self._bare(stop=",}]")

    def _items(self, opening: str, closing: str, read_item: Callable[[], None]) -> None:
        """``opening item, item, ... closing`` (a trailing comma allowed), ``read_item()`` reading each."""
        self._expect(opening)
        while self._peek() != closing:
            read_item()
            if self._peek() == ",":
                self.pos += 1
            elif self._peek() != closing:
                raise ParseError(f"expected ',' or '{closing}'")
        self.pos += 1

    def _dict(self, depth: int) -> dict:
        out = {}

        def read_item() -> None:
            key = self._string() if self._peek() in "\"'" else self._bare(stop=":,}")
            self._expect(":")
            out[key if isinstance(key, str) else str(key)] = self._value(depth + 1)

        self._items("{", "}", read_item)
        return out

    def _list(self, depth: int) -> list:
        out = []
        self._items("[", "]", lambda: out.append(self._value(depth + 1)))
        return out

    def _string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        chars = []
        escapes = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
        while True:
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(chars)
            if char == "\\":
                nxt = self.text[self.pos]
                self.pos += 1
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.text[self.pos : self.pos + 4]):
                    chars.append(chr(int(self.text[self.pos : self.pos + 4], 16)))
                    self.pos += 4
                else:
                    chars.append(escapes.get(nxt, nxt))
            else:
                chars.append(char)

    def _bare(self, stop: str):
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        word = self.text[start : self.pos].strip()
        if not word:
            raise ParseError("empty value")
        if word.lower() in self._BARE:
            return self._BARE[word.lower()]
        if _NUMBER.match(word) and "/" not in word:
            return float(word) if any(c in word for c in ".eE") else int(word)
        return word
