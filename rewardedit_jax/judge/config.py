"""Settings of the LVLM judge: endpoint, model, reliability limits, image size, prompts and prices.

One dataclass, `JudgeConfig`, describes a judging run completely; the label CLI builds it from its flags and
the Real-Edit evaluator builds it in Python. The defaults are the project's protocol (its own prompts, gpt-4o,
one request per perspective); `protocol="official"` sends the requests of the official repository's judge
scripts instead (official.py).
"""

from __future__ import annotations

import dataclasses

# The three reward perspectives, in the order of RewardEdit_20K.json and of the paper (section 3.1).
PERSPECTIVES: tuple[str, ...] = ("following", "preserving", "quality")

# label: score 0..5 + failure-point text (RewardEdit-style training rewards).
# eval: yes/no + score 0..5 (the Real-Edit protocol).
MODES: tuple[str, ...] = ("label", "eval")

# project: this project's prompts (rewardedit_jax/judge/prompts/); official: the official repository's
# gpt_eval/*.py, read from the user's clone at run time (rewardedit_jax/judge/official.py).
PROTOCOLS: tuple[str, ...] = ("project", "official")
DEFAULT_MODEL = {"project": "gpt-4o", "official": "gpt-4o-2024-05-13"}
# USD per 1M (input, output) tokens, OpenAI's list prices; other models: the gpt-4o prices.
MODEL_PRICES = {"gpt-4o": (2.50, 10.00), "gpt-4o-2024-05-13": (5.00, 15.00)}

RESPONSE_FORMATS: tuple[str, ...] = ("auto", "json_schema", "json_object", "none")
IMAGE_DETAILS: tuple[str, ...] = ("high", "low", "auto")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Everything that decides what is sent, how fast, and what it costs.

    The API key is deliberately not a field: it is read from the environment (`OPENAI_API_KEY`, or
    `AZURE_OPENAI_API_KEY` with `azure=True`) and never stored, so a config can be logged or saved safely.
    """

    # Endpoint. `base_url` selects any OpenAI-compatible server (e.g. a local vLLM at
    # http://127.0.0.1:8000/v1); with `azure=True` it is the Azure resource endpoint and `model` the
    # deployment name. None: DEFAULT_MODEL of the protocol.
    model: str | None = None
    base_url: str | None = None
    azure: bool = False
    azure_api_version: str | None = None  # default: $OPENAI_API_VERSION, else "2024-10-21"

    # Throughput and reliability.
    concurrency: int = 8  # requests in flight at most
    rpm: float | None = None  # requests started per minute at most (None: unlimited)
    timeout_s: float = 60.0  # per HTTP request
    max_attempts: int = 6  # per request, first try included (429 / 5xx / 408 / timeouts / connection errors)
    backoff_base_s: float = 1.0  # exponential backoff: base * 2**(attempt - 1), with jitter
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0  # a server's Retry-After is honoured up to this long

    # What the model sees.
    max_side: int | None = 512  # images are downscaled so their long side is at most this (None: as is)
    image_detail: str = "high"  # OpenAI image `detail`; "high" makes the dry-run estimate an upper bound
    prompts: str = "v1"  # a packaged prompt version, or a directory of prompt files (see prompts.py)
    # "official": the requests of the official repository's gpt_eval/*.py, read from the clone at
    # `official_repo`; they replace prompts, image size and detail, temperature, token limit and response
    # format (official.py).
    protocol: str = "project"
    official_repo: str | None = None
    temperature: float | None = 0.0  # None: leave to the server (some models accept only the default)
    max_output_tokens: int = 300
    response_format: str = "auto"  # auto: JSON schema, falling back to json_object, then plain text

    # Bookkeeping.
    cache_path: str | None = None  # SQLite cache of finished requests (None: no persistent cache)
    retry_unparsed: bool = False  # re-send requests whose cached answer could not be parsed
    price_input_per_m: float | None = None  # USD per 1M input tokens (None: MODEL_PRICES of the model)
    price_output_per_m: float | None = None  # USD per 1M output tokens (None: MODEL_PRICES of the model)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "official" and not self.official_repo:
            raise ValueError("the official protocol needs official_repo, a clone of the official repository")
        if self.model is None:
            object.__setattr__(self, "model", DEFAULT_MODEL[self.protocol])
        prices = MODEL_PRICES.get(self.model, MODEL_PRICES["gpt-4o"])
        if self.price_input_per_m is None:
            object.__setattr__(self, "price_input_per_m", prices[0])
        if self.price_output_per_m is None:
            object.__setattr__(self, "price_output_per_m", prices[1])
        if not self.model:
            raise ValueError("model must be a non-empty name")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rpm is not None and self.rpm <= 0:
            raise ValueError(f"rpm must be positive, got {self.rpm}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("backoff and retry-after limits must be >= 0")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"max_side must be >= 16 pixels, got {self.max_side}")
        if self.image_detail not in IMAGE_DETAILS:
            raise ValueError(f"image_detail must be one of {IMAGE_DETAILS}, got {self.image_detail!r}")
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(
                f"response_format must be one of {RESPONSE_FORMATS}, got {self.response_format!r}"
            )
        if self.max_output_tokens < 16:
            raise ValueError(f"max_output_tokens must be >= 16, got {self.max_output_tokens}")
        if self.price_input_per_m < 0 or self.price_output_per_m < 0:
            raise ValueError("prices must be >= 0")

    def replace(self, **changes) -> JudgeConfig:
        return dataclasses.replace(self, **changes)
