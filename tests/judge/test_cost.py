"""Cost accounting and the dry-run token approximation."""

import pytest

from rewardedit_jax.judge.cost import Usage, image_tokens, request_tokens


@pytest.mark.parametrize(
    "size, detail, tokens",
    [
        ((512, 512), "high", 255),  # one tile
        ((1024, 1024), "high", 765),  # short side to 768: 2 x 2 tiles
        ((2048, 4096), "high", 1105),  # OpenAI's worked example: 768 x 1536, 2 x 3 tiles
        ((300, 200), "high", 255),
        ((4000, 3000), "low", 85),
    ],
)
def test_image_tokens_follow_the_published_tile_rule(size, detail, tokens):
    assert image_tokens(*size, detail) == tokens


def test_request_tokens_add_text_images_and_message_overhead():
    assert request_tokens("s" * 40, "u" * 400, [(512, 512), (512, 512)], "high") == 10 + 100 + 11 + 510


def test_cost_is_priced_per_million_tokens():
    usage = Usage(prompt_tokens=2_000_000, completion_tokens=100_000)
    assert usage.cost(2.5, 10.0) == pytest.approx(5.0 + 1.0)
