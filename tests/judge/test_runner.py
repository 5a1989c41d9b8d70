"""The Python API: eval reports and aggregates, caching across runs, PIL inputs, failures kept."""

import asyncio
import json

import pytest
from judge.chat_server import Reply, make_images
from PIL import Image

from rewardedit_jax.judge import EditItem, Judge, JudgeConfig, evaluate_edits, label_edits


def fast_config(server, **changes) -> JudgeConfig:
    return JudgeConfig(**(dict(base_url=server.base_url, backoff_base_s=0.01, max_attempts=2) | changes))


@pytest.fixture
def items(tmp_path):
    pairs = make_images(tmp_path / "img", 4)
    return [EditItem(f"e{i}", s, e, f"make item {i} blue") for i, (s, e) in enumerate(pairs)]


def test_eval_report_aggregates_over_judged_perspectives_and_counts_failures(judge_server, fake_key, items):
    answers = {
        ("make item 0 blue", "following"): {"answer": "yes", "score": 5},
        ("make item 1 blue", "following"): {"answer": "no", "score": 1.5},
        ("make item 2 blue", "following"): {"answer": "yes", "score": 4},
        ("make item 3 blue", "following"): "not a judgment",
    }

    def script(request):
        if request.perspective == "following":
            answer = answers[(request.instruction, "following")]
            return Reply(content=answer if isinstance(answer, str) else json.dumps(answer))
        if request.perspective == "preserving":
            return Reply(content="{'consistent': 'no', 'score': 2}")
        return Reply(content='{"clear": "yes", "score": 4.5}')

    judge_server.script = script
    report = evaluate_edits(items, fast_config(judge_server))
    assert report.n == 4 and report.failed == 1
    assert report.following_n == 3
    assert report.following_yes == pytest.approx(2 / 3)
    assert report.following_score == pytest.approx((5 + 1.5 + 4) / 3)
    assert (report.preserving_yes, report.preserving_score, report.preserving_n) == (0.0, 2.0, 4)
    assert (report.quality_yes, report.quality_score) == (1.0, 4.5)
    failed = report.items[3]
    assert not failed.ok and failed.id == "e3"
    assert "unparseable answer" in failed.failures["following"]
    assert failed.judgments["following"].raw == "not a judgment"
    aggregates = report.aggregates()
    assert aggregates["failed"] == 1 and aggregates["following_yes"] == pytest.approx(2 / 3)
    assert [r.id for r in report.items] == ["e0", "e1", "e2", "e3"]


def test_pil_images_and_mappings_are_accepted(judge_server, fake_key):
    source = Image.new("RGB", (64, 48), (0, 128, 0))
    edited = Image.new("RGB", (64, 48), (0, 0, 128))
    item = {"source": source, "edited": edited, "instruction": "paint it blue"}
    report = evaluate_edits([item], fast_config(judge_server))
    assert report.failed == 0 and report.items[0].id == "0"
    assert judge_server.requests[0].image_urls[0].startswith("data:image/jpeg;base64,")


def test_cache_means_a_second_run_sends_nothing(judge_server, fake_key, items, tmp_path):
    config = fast_config(judge_server, cache_path=str(tmp_path / "cache.sqlite"))
    first = label_edits(items, config)
    assert len(judge_server.requests) == 12 and first.usage.cache_hits == 0
    judge_server.reset()
    second = label_edits(items, config)
    assert judge_server.requests == []
    assert second.usage.cache_hits == 12 and second.usage.requests_sent == 0 and second.cost_usd == 0.0
    assert second.rewards == first.rewards
    # A different mode, model or image size is a different request.
    evaluate_edits(items[:1], config)
    label_edits(items[:1], config.replace(max_side=256))
    assert len(judge_server.requests) == 6


def test_unparsed_cached_answers_are_resent_only_when_asked(judge_server, fake_key, items, tmp_path):
    config = fast_config(judge_server, cache_path=str(tmp_path / "cache.sqlite"))
    judge_server.script = lambda r: Reply(content="garbage") if r.perspective == "quality" else None
    assert len(label_edits(items[:1], config).failed) == 1
    judge_server.script = None
    judge_server.reset()
    assert len(label_edits(items[:1], config).failed) == 1 and judge_server.requests == []
    report = label_edits(items[:1], config.replace(retry_unparsed=True))
    assert report.failed == [] and [r.perspective for r in judge_server.requests] == ["quality"]


def test_unreadable_image_is_a_recorded_failure_not_a_crash(judge_server, fake_key, items, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    bad = EditItem("bad", items[0].source, str(broken), "make it red")
    missing = EditItem("missing", str(tmp_path / "nope.png"), items[0].edited, "make it red")
    report = label_edits([bad, missing, items[1]], fast_config(judge_server))
    assert [r.id for r in report.failed] == ["bad", "missing"]
    assert all(reason.startswith("cannot read image") for reason in report.failed[0].failures.values())
    assert list(report.rewards) == ["e1"]


def test_sync_api_works_inside_a_running_event_loop(judge_server, fake_key, items):
    async def notebook_cell():
        return evaluate_edits(items[:1], fast_config(judge_server))

    assert asyncio.run(notebook_cell()).failed == 0


def test_plan_counts_requests_and_estimates_cost_without_sending(judge_server, fake_key, items):
    judge = Judge(fast_config(judge_server))
    plan = judge.plan(items, "label")
    assert plan.requests == 12 and plan.cached == 0
    # 24x16 images: one tile each (255 tokens); following/preserving send two images, quality one.
    assert plan.est_prompt_tokens > 4 * 5 * 255
    assert plan.est_cost_usd == pytest.approx(
        (plan.est_prompt_tokens * 2.5 + plan.est_completion_tokens * 10.0) / 1e6
    )
    assert judge_server.requests == []
