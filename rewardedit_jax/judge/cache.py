"""Persistent cache of finished judge requests (SQLite, WAL), so no request is ever paid for twice.

A request is *finished* when the endpoint returned an answer; its raw text is stored (parsing happens on
read, so a parser fix also fixes cached answers). Requests that failed in transport (HTTP errors after the
retry budget, timeouts) are not stored and are sent again by the next run.

The key is the sha256 of: model, prompt version, mode, perspective, content hashes of the images sent, the
instruction (when the prompt uses it), the image long side and the image detail level (and, for the official
protocol, the size the images are resized to; its prompt version is a digest of the official requests).
Each answer is committed in its own transaction as it arrives (WAL journal, synchronous=NORMAL): a run
killed at any point keeps every answer received before the kill, and a resumed run sends only the rest.
(synchronous=NORMAL survives process crashes; a power loss can forget the last few answers, which are then
simply re-requested.)
The API key is never part of a key or a row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import time

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    mode TEXT NOT NULL,
    perspective TEXT NOT NULL,
    image_hashes TEXT NOT NULL,
    instruction TEXT,
    answer TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class RequestIdentity:
    """What makes two requests the same request."""

    model: str
    prompt_version: str
    mode: str
    perspective: str
    image_hashes: tuple[str, ...]
    instruction: str | None  # None when the prompt does not show the instruction
    max_side: int | None
    detail: str
    # The (width, height) every image is resized to, when the protocol fixes it (official protocol). Left
    # out of the key when None, so the keys of earlier caches stay valid.
    sent_size: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["sent_size"] is None:
            del fields["sent_size"]
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedAnswer:
    answer: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class AnswerCache:
    """SQLite-backed map from `RequestIdentity.key` to the raw answer and its token usage."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # Autocommit mode: every INSERT is its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: cache schema {row[0]}, this code reads {SCHEMA_VERSION}")

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute(
            "SELECT answer, finish_reason, prompt_tokens, completion_tokens FROM answers WHERE key = ?",
            (key,),
        ).fetchone()
        return None if row is None else CachedAnswer(*row)

    def put(self, identity: RequestIdentity, answer: CachedAnswer) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                identity.key,
                identity.model,
                identity.prompt_version,
                identity.mode,
                identity.perspective,
                ",".join(identity.image_hashes),
                identity.instruction,
                answer.answer,
                answer.finish_reason,
                answer.prompt_tokens,
                answer.completion_tokens,
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
