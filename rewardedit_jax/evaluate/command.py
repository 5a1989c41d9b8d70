"""``python -m rewardedit_jax.evaluate``: the flags, and the run they describe."""

from __future__ import annotations

import argparse
import time

from rewardedit_jax import cli
from rewardedit_jax.evaluate.runner import run_evaluation
from rewardedit_jax.evaluate.settings import DEFAULT_BATCH_SIZE, JUDGES, EvalSettings
from rewardedit_jax.evaluators import EvaluationError


def build_parser() -> argparse.ArgumentParser:
    p = cli.model_parser(
        "python -m rewardedit_jax.evaluate",
        "Generate, judge and summarize a benchmark's edits (Real-Edit protocol).",
        what="workdir",
    )
    p.add_argument("--benchmark", required=True, help="real_edit or synthetic_edit[/CONFIG]")
    p.add_argument("--data-dir", required=True, help="TFDS data_dir the benchmark is built in")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    p.add_argument("--judge", choices=JUDGES, help="default: gpt for real_edit, oracle for synthetic_edit")
    cli.add_sampling_arguments(
        p, seed_help="edit i is seeded with seed + i, its index in the split (default 42)"
    )
    p.add_argument(
        "--shared-noise",
        action="store_true",
        help="seed every edit with --seed (one noise draw shared by all edits) instead of seed + i",
    )
    p.add_argument(
        "--seed-per-edit",
        action="store_const",
        const=True,
        help="seed edit i with seed + i: independent noise per edit (the default; kept for old commands)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        help="long side of the fitted input (default: 512 real_edit, native synthetic)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"edits per device per sampler call (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--limit", type=int, help="only the first N edits (quick looks)")
    p.add_argument("--clip-model", help="local transformers CLIPModel folder for CLIP-I / CLIP-T")
    p.add_argument(
        "--dino-model",
        help="local transformers ViTModel/Dinov2Model folder (e.g. facebook/dino-vits16) for the DINO "
        "similarity to the references (synthetic_edit)",
    )
    p.add_argument(
        "--judge-protocol",
        choices=("project", "official"),
        default="project",
        help="--judge gpt: the project's own prompts (default), or the official repository's judge requests "
        "read from --official-repo (docs/judge.md)",
    )
    p.add_argument(
        "--official-repo",
        help="--judge-protocol official: your clone of bytedance/Multi-Reward-Editing (its gpt_eval/*.py)",
    )
    p.add_argument(
        "--judge-model",
        help="--judge gpt: model (default: gpt-4o; with --judge-protocol official gpt-4o-2024-05-13)",
    )
    p.add_argument("--judge-base-url", help="--judge gpt: an OpenAI-compatible endpoint")
    p.add_argument("--judge-concurrency", type=int, default=8, help="--judge gpt: requests in flight")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli.add_distributed_arguments(p)
    return p


def run_cli(args: argparse.Namespace) -> dict | None:
    """The evaluation of parsed flags: checked into :class:`EvalSettings` first, then run."""
    start = time.perf_counter()
    return run_evaluation(EvalSettings.from_args(args), start=start)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(build_parser(), run_cli, argv, errors=(EvaluationError,))
