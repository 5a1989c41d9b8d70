"""A real chat-completions HTTP server on 127.0.0.1 for the judge tests, scriptable per test.

(The tests import it as `judge.chat_server`, `tests/` being on the pytest path; the fixtures live in
conftest.py.)

It speaks enough of the OpenAI protocol for the `openai` client: POST .../chat/completions with a JSON body,
a JSON `chat.completion` reply with `usage`. Each test can set the latency, script replies (status codes,
headers such as Retry-After, answer texts) and read what the server saw: every request body, the number of
requests per (instruction, perspective), and the highest number of requests in flight at once.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

FAKE_KEY = "sk-test-FAKE-SECRET-0b7e1c9a4d2f"

_PERSPECTIVE_TITLES = {
    "instruction following": "following",
    "detail preserving": "preserving",
    "generation quality": "quality",
}


@dataclasses.dataclass
class SeenRequest:
    path: str
    headers: dict
    body: dict

    @property
    def text(self) -> str:
        """All text parts of all messages."""
        parts = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(c.get("text", "") for c in content if c.get("type") == "text")
        return "\n".join(parts)

    @property
    def image_urls(self) -> list[str]:
        urls = []
        for message in self.body.get("messages", []):
            if isinstance(message.get("content"), list):
                urls.extend(c["image_url"]["url"] for c in message["content"] if c.get("type") == "image_url")
        return urls

    @property
    def perspective(self) -> str | None:
        match = re.search(r"Perspective: ([a-z ]+)\.", self.text)
        return _PERSPECTIVE_TITLES.get(match.group(1)) if match else None

    @property
    def mode(self) -> str:
        return "label" if '"feedback"' in self.text else "eval"

    @property
    def instruction(self) -> str | None:
        match = re.search(r'Instruction: "(.*)"', self.text)
        return match.group(1) if match else None


@dataclasses.dataclass
class Reply:
    status: int = 200
    content: str | None = None  # answer text (200) ; None: the default answer
    headers: dict = dataclasses.field(default_factory=dict)
    body: dict | str | None = None  # a whole raw body instead (errors or broken replies)
    delay_s: float | None = None  # None: the server's latency


def default_answer(request: SeenRequest) -> str:
    """Deterministic answers: label feedback names the instruction; quality of 'bad ...' edits is 1."""
    instruction = request.instruction or ""
    if request.mode == "label":
        score = 1 if request.perspective == "quality" and instruction.startswith("bad") else 4
        feedback = "None" if request.perspective == "quality" else f"{request.perspective}: {instruction}"
        return json.dumps({"score": score, "feedback": feedback})
    return json.dumps({"answer": "yes", "score": 4.5})


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.latency_s = 0.0
        self.script: Callable[[SeenRequest], Reply | None] | None = None  # None reply: default answer
        self.requests: list[SeenRequest] = []
        self.counts: Counter = Counter()  # (instruction, perspective) -> requests received
        self.in_flight = 0
        self.max_in_flight = 0
        self.usage = {"prompt_tokens": 100, "completion_tokens": 20}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.counts.clear()
            self.max_in_flight = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: JudgeServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY the body waits for a delayed ACK
        # (~40 ms on Linux), which would add a fake 40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            request = SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
            with server.lock:
                server.requests.append(request)
                server.counts[(request.instruction, request.perspective)] += 1
            reply = (server.script(request) if server.script else None) or Reply()
            time.sleep(server.latency_s if reply.delay_s is None else reply.delay_s)
            if reply.body is not None:
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            elif reply.status != 200:
                error = {"message": f"scripted {reply.status}", "type": "test", "code": None}
                body = json.dumps({"error": error})
            else:
                content = reply.content if reply.content is not None else default_answer(request)
                body = json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request.body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                        "usage": dict(server.usage, total_tokens=sum(server.usage.values())),
                    }
                )
        finally:
            # Leave the in-flight count before the reply goes out: once the client has the reply it may
            # start its next request at once.
            with server.lock:
                server.in_flight -= 1
        data = body.encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def make_images(folder, n: int, size=(24, 16)) -> list[tuple[str, str]]:
    """n (source, edited) PNG pairs with distinct content."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        source = folder / f"{i:04d}_src.png"
        edited = folder / f"{i:04d}_edit.png"
        Image.new("RGB", size, (i % 256, (i * 7) % 256, 10)).save(source)
        Image.new("RGB", size, (i % 256, (i * 7) % 256, 200)).save(edited)
        pairs.append((str(source), str(edited)))
    return pairs


def write_manifest(path, pairs, instructions=None) -> list[dict]:
    records = []
    for i, (source, edited) in enumerate(pairs):
        instruction = instructions[i] if instructions else f"make item {i} blue"
        records.append({"id": f"e{i:04d}", "source": source, "edited": edited, "instruction": instruction})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
