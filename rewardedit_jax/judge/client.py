"""Chat-completion transport: endpoints, concurrency and rate limits, retries, and secret hygiene.

Endpoints go through the `openai` package: OpenAI, Azure OpenAI (`AsyncAzureOpenAI`), or any OpenAI-compatible
`base_url` (a local vLLM, for example). The client's own retries are off (`max_retries=0`); this module owns
the policy so that it is explicit and testable:

- at most `concurrency` requests in flight, and optionally at most `rpm` request starts per minute (evenly
  spaced);
- 429, 408, 409, 5xx, timeouts, connection errors and 2xx replies that are not a chat completion are
  retried, up to `max_attempts` tries in total, after `backoff_base_s * 2**(attempt-1)` seconds (capped at
  `backoff_max_s`, "equal jitter": half fixed, half random), or after the server's `Retry-After` /
  `retry-after-ms` when it sends one (capped at `max_retry_after_s`); a 429 with Retry-After pauses every
  request, not just the one that got it;
- other 4xx fail the request at once, except 401/403/404 and a 429 `insufficient_quota`, which mean the
  whole run cannot work (bad key, no access, unknown model or deployment, no credit) and raise
  `JudgeFatalError`;
- with `response_format="auto"`, a 400/422 to a JSON-schema request is retried with `json_object`, then with
  no response format, and the first that works is used from then on (requests go one at a time until the
  first answer, so this discovery costs at most two refused requests).

The API key is read from the environment only and is redacted from every message this module produces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import os
import random
import re
import time
from collections.abc import Callable

import openai
from openai.types.chat import ChatCompletion

from rewardedit_jax.judge.config import JudgeConfig
from rewardedit_jax.judge.cost import Usage

log = logging.getLogger(__name__)

DEFAULT_AZURE_API_VERSION = "2024-10-21"
_RETRY_STATUS = {408, 409, 429}
_FATAL_STATUS = {401: "authentication failed", 403: "permission denied", 404: "model or endpoint not found"}
_FORMAT_LADDER = ("json_schema", "json_object", "none")


class JudgeFatalError(RuntimeError):
    """The endpoint refuses every request (bad key, no access, unknown model): stop the run."""


class _MalformedResponse(Exception):
    """A 2xx reply that is not a chat completion (a proxy's error page, a broken server): retried."""


class RequestFailed(Exception):
    """One request ended without an answer; `reason` is a one-line, secret-free explanation."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def api_key_env_names(azure: bool) -> tuple[str, ...]:
    return ("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY") if azure else ("OPENAI_API_KEY",)


def api_key_from_env(azure: bool) -> str | None:
    """The API key from `OPENAI_API_KEY` (Azure: `AZURE_OPENAI_API_KEY`, else `OPENAI_API_KEY`)."""
    for name in api_key_env_names(azure):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def make_client(config: JudgeConfig, api_key: str) -> openai.AsyncOpenAI:
    """An async client with the library's retries off (the policy lives in `ChatTransport`)."""
    if config.azure:
        endpoint = config.base_url or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ValueError(
                "Azure needs an endpoint: --base-url https://NAME.openai.azure.com or AZURE_OPENAI_ENDPOINT"
            )
        version = (
            config.azure_api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
        )
        return openai.AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=endpoint,
            api_version=version,
            max_retries=0,
            timeout=config.timeout_s,
        )
    kwargs = {"base_url": config.base_url} if config.base_url else {}
    return openai.AsyncOpenAI(api_key=api_key, max_retries=0, timeout=config.timeout_s, **kwargs)


class Redactor:
    """Replaces every secret in a text by `[REDACTED]`."""

    def __init__(self, secrets: list[str | None]):
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text


class RateLimiter:
    """Even spacing of request starts (`rpm`) and a shared pause after a 429 with Retry-After."""

    def __init__(self, rpm: float | None):
        self._interval = 60.0 / rpm if rpm else 0.0
        self._next_start = 0.0
        self._paused_until = 0.0

    def pause_until(self, deadline: float) -> None:
        self._paused_until = max(self._paused_until, deadline)

    async def wait_turn(self) -> None:
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        if self._interval:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
            if start > now:
                await asyncio.sleep(start - now)


def retry_after_seconds(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (a number or an HTTP date); None if absent or bad."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatTransport:
    """Sends chat completions under the concurrency, rate and retry policy; counts usage."""

    def __init__(self, config: JudgeConfig, client: openai.AsyncOpenAI, redact: Redactor, usage: Usage):
        self.config = config
        self.client = client
        self.redact = redact
        self.usage = usage
        self._slots = asyncio.Semaphore(config.concurrency)
        self._limiter = RateLimiter(config.rpm)
        ladder = _FORMAT_LADDER if config.response_format == "auto" else (config.response_format,)
        self._ladder = ladder
        self._format_level = 0  # index into the ladder that works for this endpoint (auto mode)
        # In auto mode, requests go one at a time until one succeeds, so finding the format costs at most
        # two refused requests in all instead of two per request in flight.
        self._format_known = len(ladder) == 1
        self._discovery = asyncio.Lock()

    async def complete(
        self, messages: list[dict], response_formats: dict[str, dict | None], sampling: dict | None = None
    ) -> Completion:
        """One answer for `messages`; raises RequestFailed (this request) or JudgeFatalError (the run).

        `response_formats` maps json_schema / json_object / none to the request's `response_format` field.
        `sampling`: the request's fields besides model and messages, as given (the official protocol's
        `max_tokens`); None: the config's `max_completion_tokens` and `temperature`.
        """
        try:
            if not self._format_known:
                async with self._discovery:
                    if not self._format_known:
                        return await self._complete(messages, response_formats, sampling)
            return await self._complete(messages, response_formats, sampling)
        except RequestFailed:
            self.usage.failed_requests += 1
            raise

    async def _complete(
        self, messages: list[dict], response_formats: dict[str, dict | None], sampling: dict | None
    ) -> Completion:
        attempt = 0
        level = self._format_level
        first_refusal: str | None = None

        def pick_format() -> dict | None:
            # Called once a slot is held, so a fallback found by another request meanwhile is used at once.
            nonlocal level
            level = max(level, self._format_level)
            return response_formats[self._ladder[level]]

        while True:
            attempt += 1
            try:
                completion = await self._send(messages, pick_format, sampling)
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = self._describe(exc)
                if status in _FATAL_STATUS:
                    raise JudgeFatalError(f"{_FATAL_STATUS[status]}: {message}") from None
                if status == 429 and exc.code == "insufficient_quota":
                    raise JudgeFatalError(f"quota exhausted: {message}") from None
                if status in (400, 422) and level + 1 < len(self._ladder):
                    # Maybe the endpoint does not support this response format: try the next one, for free.
                    first_refusal = first_refusal or message
                    log.info(
                        "response_format %s refused (%s); trying %s",
                        self._ladder[level],
                        message,
                        self._ladder[level + 1],
                    )
                    level += 1
                    attempt -= 1
                    continue
                if status not in _RETRY_STATUS and status < 500:
                    raise RequestFailed(first_refusal or message) from None
                retry_after = retry_after_seconds(exc.response.headers)
                delay = self._retry_delay(attempt, retry_after)
                if status == 429 and retry_after is not None:
                    self._limiter.pause_until(time.monotonic() + delay)
            except openai.APITimeoutError:
                message = f"timed out after {self.config.timeout_s:g} s"
                delay = self._retry_delay(attempt, None)
            except openai.APIConnectionError as exc:
                message = self._describe(exc)
                delay = self._retry_delay(attempt, None)
            except _MalformedResponse as exc:
                message = self.redact(f"malformed response: {exc}") or "malformed response"
                delay = self._retry_delay(attempt, None)
            except openai.APIError as exc:  # anything else the client raises
                raise RequestFailed(self._describe(exc)) from None
            else:
                if not self._format_known:  # this request found the format (it held the discovery lock)
                    if level > 0:
                        log.info(
                            "endpoint accepts response_format %s; using it from now on", self._ladder[level]
                        )
                    self._format_level = level
                    self._format_known = True
                return completion
            if attempt >= self.config.max_attempts:
                raise RequestFailed(f"{message} (gave up after {attempt} attempts)")
            log.info("attempt %d failed (%s); retrying in %.2f s", attempt, message, delay)
            await asyncio.sleep(delay)

    async def _send(
        self, messages: list[dict], pick_format: Callable[[], dict | None], sampling: dict | None = None
    ) -> Completion:
        body = {"model": self.config.model, "messages": messages}
        if sampling is not None:
            body.update(sampling)
        else:
            body["max_completion_tokens"] = self.config.max_output_tokens
            if self.config.temperature is not None:
                body["temperature"] = self.config.temperature
        async with self._slots:
            await self._limiter.wait_turn()
            response_format = pick_format()
            if response_format is not None:
                body["response_format"] = response_format
            self.usage.requests_sent += 1
            # `client.post` (the package's documented route for raw requests) sends the plain JSON body as
            # is; `chat.completions.create` would first walk it against the typed schema, ~2.5 ms of CPU per
            # request, which caps throughput on a small machine. Routing (Azure deployments) is the same.
            try:
                response = await self.client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=ChatCompletion,
                    options={"timeout": self.config.timeout_s},
                )
            except ValueError as exc:  # the body is not JSON
                raise _MalformedResponse(" ".join(str(exc).split())[:200]) from None
        try:
            choice = response.choices[0]
            content = choice.message.content
            if content is not None and not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}")
            usage = response.usage
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise _MalformedResponse(f"not a chat completion ({type(exc).__name__}: {exc})"[:200]) from None
        self.usage.answers += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        return Completion(
            text=self.redact(content or "") or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.max_retry_after_s)
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _describe(self, exc: openai.APIError) -> str:
        status = getattr(exc, "status_code", None)
        text = " ".join(str(getattr(exc, "message", "") or exc).split())
        text = re.sub(r"^Error code: \d+ - ", "", text)
        if len(text) > 300:
            text = text[:297] + "..."
        prefix = f"HTTP {status}: " if status is not None else f"{type(exc).__name__}: "
        return self.redact(prefix + text) or prefix
