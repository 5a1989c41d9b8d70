"""Token usage, cost accounting and the dry-run cost estimate.

Real runs count the `usage` the endpoint returns with each answer. The dry run has no answers, so it
estimates (documented approximation, good to roughly +-20% for GPT-4o-class models):
- text: one token per 4 characters of system and user text, plus 4 tokens per message and 3 for the reply;
- images, detail "high" (OpenAI's published rule for GPT-4o): fit the image in 2048x2048, scale its short side
  down to 768, count 512-pixel tiles; tokens = 85 + 170 * tiles (a 512x512 image: 255). Detail "low": 85.
  "auto" is estimated as "high", so the estimate is an upper bound for it. Other models count differently.
- output: a fixed number of tokens per answer (`ESTIMATED_OUTPUT_TOKENS`).
"""

from __future__ import annotations

import dataclasses
import math

ESTIMATED_OUTPUT_TOKENS = {"label": 40, "eval": 16}


@dataclasses.dataclass
class Usage:
    """Counters of one run. Cached answers cost nothing in this run and are counted separately."""

    requests_sent: int = 0  # HTTP requests sent, retries included
    answers: int = 0  # requests that returned an answer (paid)
    cache_hits: int = 0  # judgments served from the cache
    failed_requests: int = 0  # requests that ended without an answer after their retries
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, price_input_per_m: float, price_output_per_m: float) -> float:
        """USD for the tokens counted so far."""
        return (self.prompt_tokens * price_input_per_m + self.completion_tokens * price_output_per_m) / 1e6

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def image_tokens(width: int, height: int, detail: str) -> int:
    """Approximate input tokens of one image as sent (see the module docstring)."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return 85 + 170 * tiles


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def request_tokens(system: str, user_text: str, image_sizes: list[tuple[int, int]], detail: str) -> int:
    """Approximate input tokens of one judge request."""
    return (
        text_tokens(system)
        + text_tokens(user_text)
        + 2 * 4
        + 3
        + sum(image_tokens(width, height, detail) for width, height in image_sizes)
    )
