"""Fixtures of the judge tests: the local chat-completions server and a fake API key."""

import threading

import pytest
from judge.chat_server import FAKE_KEY, JudgeServer


@pytest.fixture
def judge_server():
    server = JudgeServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_key(monkeypatch) -> str:
    """A fake OpenAI key in the environment; tests assert it never reaches a file."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return FAKE_KEY
