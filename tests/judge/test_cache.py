"""The answer cache: keys cover everything that changes a request; each answer is durable at once."""

import dataclasses
import sqlite3

from rewardedit_jax.judge.cache import AnswerCache, CachedAnswer, RequestIdentity

IDENTITY = RequestIdentity(
    model="gpt-4o",
    prompt_version="v1",
    mode="label",
    perspective="following",
    image_hashes=("a" * 64, "b" * 64),
    instruction="make it red",
    max_side=512,
    detail="high",
)


def test_key_changes_with_every_component_of_the_request():
    changes = dict(
        model="gpt-4o-mini",
        prompt_version="v2",
        mode="eval",
        perspective="preserving",
        image_hashes=("a" * 64, "c" * 64),
        instruction="make it blue",
        max_side=768,
        detail="low",
    )
    keys = {IDENTITY.key} | {dataclasses.replace(IDENTITY, **{k: v}).key for k, v in changes.items()}
    assert len(keys) == 1 + len(changes)
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
