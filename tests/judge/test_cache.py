"""The answer cache: keys cover everything that changes a request; each answer is durable at once."""

import dataclasses
import sqlite3

from rewardedit_jax.judge.cache import AnswerCache, CachedAnswer, RequestIdentity

# Every field of a request: (its value in IDENTITY, another value).
FIELDS = {
    "model": ("gpt-4o", "gpt-4o-mini"),
    "prompt_version": ("v1", "v2"),
    "mode": ("label", "eval"),
    "perspective": ("following", "preserving"),
    "image_hashes": (("a" * 64, "b" * 64), ("a" * 64, "c" * 64)),
    "instruction": ("make it red", "make it blue"),
    "max_side": (512, 768),
    "detail": ("high", "low"),
    "sent_size": (None, (512, 384)),  # None: left out of the key
}
IDENTITY = RequestIdentity(**{name: values[0] for name, values in FIELDS.items()})


def test_key_changes_with_every_component_of_the_request():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(RequestIdentity)}
    changed = [dataclasses.replace(IDENTITY, **{name: values[1]}) for name, values in FIELDS.items()]
    keys = {IDENTITY.key} | {identity.key for identity in changed}
    assert len(keys) == 1 + len(FIELDS)
    assert dataclasses.replace(IDENTITY).key == IDENTITY.key


def test_answer_is_committed_as_soon_as_it_is_stored(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = AnswerCache(path)
    cache.put(IDENTITY, CachedAnswer('{"score": 4, "feedback": "None"}', "stop", 120, 9))
    # Another connection (as after a crash: the first one is never closed) sees the row.
    other = sqlite3.connect(path)
    row = other.execute("SELECT perspective, instruction, answer, prompt_tokens FROM answers").fetchone()
    assert row == ("following", "make it red", '{"score": 4, "feedback": "None"}', 120)
    other.close()
    assert cache.get(IDENTITY.key) == CachedAnswer('{"score": 4, "feedback": "None"}', "stop", 120, 9)
    assert cache.get("missing") is None
    assert len(cache) == 1
    cache.close()
    with AnswerCache(path) as reopened:
        assert reopened.get(IDENTITY.key).completion_tokens == 9
