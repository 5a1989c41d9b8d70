"""The transport against a real local chat-completions server: requests, retries, limits, failures."""

import asyncio
import base64
import email.utils
import socket
import time

import httpx2
import pytest
from judge.chat_server import FAKE_KEY, Reply, make_images

from rewardedit_jax.judge import JudgeConfig, JudgeFatalError, evaluate_edits, label_edits
from rewardedit_jax.judge.client import RateLimiter, retry_after_seconds


def fast_config(server, **changes) -> JudgeConfig:
    base = dict(base_url=server.base_url, model="judge-model-x", backoff_base_s=0.01, timeout_s=5.0)
    return JudgeConfig(**(base | changes))


@pytest.fixture
def items(tmp_path):
    pairs = make_images(tmp_path / "img", 3)
    return [
        {"id": f"e{i}", "source": s, "edited": e, "instruction": f"make item {i} blue"}
        for i, (s, e) in enumerate(pairs)
    ]


def test_request_carries_model_instruction_and_images_as_data_urls(judge_server, fake_key, items):
    report = label_edits(items[:1], fast_config(judge_server))
    assert report.rewards["e0"][0] == {"Score": 4, "Negative Prompt": "following: make item 0 blue"}
    seen = {r.perspective: r for r in judge_server.requests}
    assert set(seen) == {"following", "preserving", "quality"}
    with open(items[0]["source"], "rb") as f:
        source_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    with open(items[0]["edited"], "rb") as f:
        edited_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    for perspective, request in seen.items():
        assert request.path == "/v1/chat/completions"
        assert request.body["model"] == "judge-model-x"
        assert request.headers["authorization"] == f"Bearer {FAKE_KEY}"
        assert request.body["response_format"]["type"] == "json_schema"
        assert request.body["temperature"] == 0.0
        assert 'Instruction: "make item 0 blue"' in request.text
        expected = [edited_url] if perspective == "quality" else [source_url, edited_url]
        assert request.image_urls == expected


def test_429_with_retry_after_is_honoured_then_succeeds(judge_server, fake_key, items):
    calls = []

    def script(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return Reply(status=429, headers={"Retry-After": "1"})
        return None

    judge_server.script = script
    report = evaluate_edits(items[:1], fast_config(judge_server, concurrency=1))
    assert report.failed == 0 and report.following_yes == 1.0
    assert len(calls) == 4  # 3 perspectives + 1 retry
    # Backoff base is 10 ms: the 1 s wait can only come from Retry-After.
    assert calls[1] - calls[0] >= 0.95
    assert report.usage.requests_sent == 4 and report.usage.answers == 3


def test_persistent_500_ends_as_a_recorded_failure_after_the_retry_budget(judge_server, fake_key, items):
    judge_server.script = lambda r: Reply(status=500) if r.perspective == "preserving" else None
    report = label_edits(items[:2], fast_config(judge_server, max_attempts=3))
    assert report.rewards == {}
    for result in report.items:
        assert result.judgments["following"].ok and result.judgments["quality"].ok
        reason = result.failures["preserving"]
        assert "HTTP 500" in reason and "gave up after 3 attempts" in reason
    preserving_counts = [n for (instruction, p), n in judge_server.counts.items() if p == "preserving"]
    assert preserving_counts == [3, 3]
    assert report.usage.failed_requests == 2


def test_timeouts_and_503_are_retried(judge_server, fake_key, items):
    state = {"n": 0}

    def script(request):
        state["n"] += 1
        if state["n"] == 1:
            return Reply(delay_s=1.0)  # longer than the 0.3 s timeout
        if state["n"] == 2:
            return Reply(status=503)
        return None

    judge_server.script = script
    report = evaluate_edits(items[:1], fast_config(judge_server, concurrency=1, timeout_s=0.3))
    assert report.failed == 0
    assert report.usage.requests_sent == 5


def test_connection_errors_end_as_recorded_failures(fake_key, items):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", backoff_base_s=0.01, max_attempts=2)
    report = evaluate_edits(items[:1], config)
    assert report.failed == 1
    assert all("gave up after 2 attempts" in r for r in report.items[0].failures.values())


def test_malformed_answer_is_a_recorded_parse_failure_with_the_raw_answer(judge_server, fake_key, items):
    def script(request):
        return Reply(content="The edit looks great!") if request.perspective == "quality" else None

    judge_server.script = script
    report = label_edits(items[:1], fast_config(judge_server))
    judgment = report.items[0].judgments["quality"]
    assert not judgment.ok
    assert judgment.failure.startswith("unparseable answer")
    assert judgment.raw == "The edit looks great!"
    assert report.rewards == {}


def test_out_of_range_score_is_a_recorded_failure(judge_server, fake_key, items):
    judge_server.script = lambda r: Reply(content='{"answer": "yes", "score": 7}')
    report = evaluate_edits(items[:1], fast_config(judge_server))
    assert report.failed == 1
    assert "outside 0..5" in report.items[0].failures["following"]


def test_integer_scores_from_the_server_are_accepted(judge_server, fake_key, items):
    judge_server.script = lambda r: Reply(content="{'following': 'yes', 'score': 4}")
    report = evaluate_edits(items, fast_config(judge_server))
    assert report.failed == 0 and report.following_score == 4.0 and report.quality_n == 3


def test_structured_output_falls_back_when_the_endpoint_refuses_it(judge_server, fake_key, items):
    def script(request):
        if request.body.get("response_format", {}).get("type") in ("json_schema", "json_object"):
            return Reply(status=400, body={"error": {"message": "response_format not supported"}})
        return None

    judge_server.script = script
    report = label_edits(items, fast_config(judge_server, concurrency=4))
    assert len(report.rewards) == 3 and report.usage.answers == 9
    formats = [r.body.get("response_format", {}).get("type") for r in judge_server.requests]
    # The first request walks down schema -> object -> plain; every later one goes plain at once.
    assert formats == ["json_schema", "json_object"] + [None] * 9


def test_unauthorised_key_stops_the_run_with_a_secret_free_error(judge_server, fake_key, items):
    judge_server.script = lambda r: Reply(
        status=401, body={"error": {"message": f"Incorrect API key provided: {r.headers['authorization']}"}}
    )
    with pytest.raises(JudgeFatalError, match="authentication failed") as caught:
        label_edits(items, fast_config(judge_server))
    assert FAKE_KEY not in str(caught.value)
    assert "[REDACTED]" in str(caught.value)


def test_rpm_limit_spaces_request_starts(judge_server, fake_key, items):
    started = time.monotonic()
    evaluate_edits(items[:2], fast_config(judge_server, rpm=1200, concurrency=8))  # 6 requests, 50 ms apart
    assert time.monotonic() - started >= 0.25
    assert len(judge_server.requests) == 6


def test_rate_limiter_pause_holds_every_request():
    async def scenario():
        limiter = RateLimiter(rpm=None)
        limiter.pause_until(time.monotonic() + 0.2)
        started = time.monotonic()
        await asyncio.gather(limiter.wait_turn(), limiter.wait_turn())
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.19


def test_retry_after_forms():
    assert retry_after_seconds(httpx2.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx2.Headers({"retry-after": "3"})) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(httpx2.Headers({"retry-after": date})) <= 31
    assert retry_after_seconds(httpx2.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx2.Headers({})) is None


def test_azure_requests_go_to_the_deployment_with_the_api_key_header(
    judge_server, monkeypatch, fake_key, items
):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", FAKE_KEY + "-azure")
    config = JudgeConfig(
        base_url=judge_server.root_url, azure=True, model="my-gpt4o", azure_api_version="2024-10-21"
    )
    report = evaluate_edits(items[:1], config)
    assert report.failed == 0
    request = judge_server.requests[0]
    assert request.path == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == FAKE_KEY + "-azure"


def test_token_usage_and_cost_are_accounted_from_the_server_usage(judge_server, fake_key, items):
    judge_server.usage = {"prompt_tokens": 1000, "completion_tokens": 50}
    config = fast_config(judge_server, price_input_per_m=2.0, price_output_per_m=8.0)
    report = label_edits(items, config)
    assert report.usage.prompt_tokens == 9000 and report.usage.completion_tokens == 450
    assert report.cost_usd == pytest.approx(9000 * 2.0 / 1e6 + 450 * 8.0 / 1e6)


@pytest.mark.parametrize(
    "body", ["<html>bad gateway</html>", '{"choices": []}', '{"choices": "x"}', "[1, 2]"]
)
def test_a_reply_that_is_not_a_chat_completion_is_retried_then_recorded(judge_server, fake_key, items, body):
    judge_server.script = lambda r: Reply(body=body)
    report = evaluate_edits(items[:1], fast_config(judge_server, max_attempts=2))
    assert report.failed == 1
    assert all(r.startswith("malformed response") for r in report.items[0].failures.values())
    assert report.usage.requests_sent == 6


def test_an_empty_filtered_answer_is_a_parse_failure_naming_the_finish_reason(judge_server, fake_key, items):
    choice = {
        "index": 0,
        "finish_reason": "content_filter",
        "message": {"role": "assistant", "content": None},
    }
    judge_server.script = lambda r: Reply(body={"choices": [choice]})
    report = evaluate_edits(items[:1], fast_config(judge_server))
    assert (
        report.items[0].failures["quality"]
        == "unparseable answer: empty answer (finish_reason=content_filter)"
    )
