"""What the argparse command-line tools (``edit``, ``evaluate``) share: the sampling flags, their checks, and
the ``main`` that turns user errors into one line on stderr and an exit status.

The absl tools whose ``--config`` is an ml_collections file (``train``, ``aot``) use
:mod:`rewardedit_jax.config_cli` instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from rewardedit_jax.io import PathError
from rewardedit_jax.parallel import add_distributed_arguments, initialize_distributed

# rewardedit_jax.sampling's SCHEDULERS and DTYPES, spelled out so that building a parser does not import
# flax (tests/test_evaluate_settings.py checks that they agree).
SCHEDULER_CHOICES = ("euler_ancestral", "euler", "ddim")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# rewardedit_jax.models.attention's IMPLEMENTATIONS, the sampler's default (DEFAULT_ATTENTION) first.
ATTENTION_CHOICES = ("auto_padded", "auto", "xla", "cudnn")
# Edits per device per sampler call: on an H200, 16 edits per call made 512x384 edits 5% faster than 8 and
# as fast as 32 (benchmarks/RESULTS.md, 2026-12-04), and pads the last call of a size less than 32.
DEFAULT_BATCH_SIZE = 16

__all__ = [
    "ATTENTION_CHOICES",
    "DEFAULT_BATCH_SIZE",
    "DTYPE_CHOICES",
    "SCHEDULER_CHOICES",
    "UsageError",
    "add_distributed_arguments",
    "add_sampling_arguments",
    "model_parser",
    "parse_scores",
    "run_main",
]


# Exit statuses of every command-line tool of the project (README, "Exit status"): 0 done; 1 done, with a
# negative result the tool exists to report (a parity check above tolerance, a step that does not fit,
# edits the judge could not label); 2 a user error, printed as one line before any expensive work or as
# soon as it is found; 130 interrupted.
EXIT_OK, EXIT_NEGATIVE, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def parse_scores(text: str, flag: str = "--reward") -> tuple[float, float, float]:
    """``"5,5,5"`` -> (5.0, 5.0, 5.0): three scores in 0..5 (following, preserving, quality)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        scores = tuple(float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{flag} must be three comma-separated numbers like 5,5,5; got {text!r}") from None
    if len(scores) != 3 or not all(math.isfinite(s) for s in scores):
        raise UsageError(f"{flag} must be three comma-separated numbers like 5,5,5; got {text!r}")
    if not all(0.0 <= s <= 5.0 for s in scores):
        raise UsageError(f"{flag} scores must be in 0..5; got {text!r}")
    return scores


def model_parser(prog: str, description: str, *, what: str = "training workdir") -> argparse.ArgumentParser:
    """A parser with the ``--model`` flag of the tools that load a model (``what``: how the help names a
    training workdir)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--model",
        required=True,
        help=f"diffusers pipeline folder, Flax model directory, {what}, or Hugging Face Hub id "
        "owner/name[@revision]",
    )
    return p


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed_help: str) -> None:
    """The sampling flags ``edit`` and ``evaluate`` share: reward, guidances, steps, scheduler, dtype,
    attention."""
    p.add_argument(
        "--reward", help="reward scores 'following,preserving,quality' (reward models; default 5,5,5)"
    )
    p.add_argument("--feedback", help='feedback text (reward models; default "None; None; None")')
    p.add_argument("--steps", type=int, default=30, help="sampling steps (default 30)")
    p.add_argument("--text-guidance", type=float, default=7.5, help="text guidance scale (default 7.5)")
    p.add_argument("--image-guidance", type=float, default=1.5, help="image guidance scale (default 1.5)")
    p.add_argument("--seed", type=int, default=42, help=seed_help)
    p.add_argument(
        "--scheduler", choices=SCHEDULER_CHOICES, default="euler_ancestral", help="default euler_ancestral"
    )
    p.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="model dtype (auto: bfloat16 on GPU/TPU, else float32)",
    )
    p.add_argument(
        "--attention",
        choices=ATTENTION_CHOICES,
        default=ATTENTION_CHOICES[0],
        help="attention implementation (default auto_padded: cuDNN flash attention on GPUs, the 77-token "
        "text keys padded and masked, the fastest measured; XLA on CPU and TPU)",
    )
    p.add_argument(
        "--reward-guidance",
        type=float,
        help="reward guidance scale: eps += g (e(reward) - e(low reward)); off by default (reward models)",
    )
    p.add_argument("--low-reward", default="0,0,0", help="scores of the low-reward branch (default 0,0,0)")
    p.add_argument(
        "--low-feedback", default="", help="feedback text of the low-reward branch (default empty)"
    )


def run_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
    *,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv``, start the multi-host job (the parser has :func:`add_distributed_arguments`'s flags),
    then ``run(args)``. A :class:`UsageError`, a :class:`PathError` (a remote file that cannot be read or
    written) or one of ``errors`` is printed as ``error: ...`` with exit status 2; Ctrl-C is status 130."""
    args = parser.parse_args(argv)
    try:
        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        run(args)
    except (UsageError, PathError, *errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
