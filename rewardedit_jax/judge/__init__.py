"""The LVLM judge of the paper (section 3.1) and of its Real-Edit benchmark, through the OpenAI API.

Three perspectives, in this order: instruction following, detail preserving, generation quality. Two modes:
*label* (score 0..5 + failure-point text, the RewardEdit-20K reward format, used to label training edits) and
*eval* (yes/no + score 0..5, the Real-Edit protocol). Two prompt protocols: the project's own prompts (the
default), or `JudgeConfig(protocol="official", official_repo=CLONE)`, the requests of the official
repository's judge scripts, read from the user's clone at run time (official.py). See docs/judge.md; the
CLI is `python -m rewardedit_jax.label`.

    from rewardedit_jax.judge import JudgeConfig, evaluate_edits
    report = evaluate_edits(
        [{"id": "cat-1", "source": "cat.jpg", "edited": "out/cat-1.png", "instruction": "make it a tiger"}],
        JudgeConfig(model="gpt-4o", cache_path="judge-cache.sqlite"),
    )
    print(report.following_yes, report.preserving_score, report.failed)
"""

from rewardedit_jax.judge.cache import AnswerCache, RequestIdentity
from rewardedit_jax.judge.client import JudgeFatalError, api_key_from_env
from rewardedit_jax.judge.config import MODES, PERSPECTIVES, PROTOCOLS, JudgeConfig
from rewardedit_jax.judge.cost import Usage
from rewardedit_jax.judge.parse import EvalAnswer, LabelAnswer, ParseError, parse_answer
from rewardedit_jax.judge.prompts import PromptSet
from rewardedit_jax.judge.runner import (
    EditItem,
    EvalReport,
    ItemResult,
    Judge,
    Judgment,
    LabelReport,
    Plan,
    evaluate_edits,
    evaluate_edits_async,
    label_edits,
    label_edits_async,
    protocol_metadata,
)

__all__ = [
    "MODES",
    "PERSPECTIVES",
    "PROTOCOLS",
    "AnswerCache",
    "EditItem",
    "EvalAnswer",
    "EvalReport",
    "ItemResult",
    "Judge",
    "JudgeConfig",
    "JudgeFatalError",
    "Judgment",
    "LabelAnswer",
    "LabelReport",
    "ParseError",
    "Plan",
    "PromptSet",
    "RequestIdentity",
    "Usage",
    "api_key_from_env",
    "evaluate_edits",
    "evaluate_edits_async",
    "label_edits",
    "label_edits_async",
    "parse_answer",
    "protocol_metadata",
]
