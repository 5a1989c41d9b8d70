"""Edit one image with an instruction: ``python -m rewardedit_jax.edit``.

    python -m rewardedit_jax.edit --model PATH --image IN.jpg --instruction "make it snowy" --out OUT.png \\
        [--reward 5,5,5] [--feedback "None; None; None"] [--steps 30] [--text-guidance 7.5] \\
        [--image-guidance 1.5] [--seed 42] [--resolution 512] [--scheduler euler_ancestral]

``PATH`` is a diffusers pipeline folder or a Flax model directory (``python -m rewardedit_jax.convert
import``). The input is fitted like the official protocol (long side about ``--resolution``, both sides
multiples of 64, centre crop + LANCZOS; REFERENCE.md section 4) and edited with the official settings by
default (Euler ancestral, 30 steps, text guidance 7.5, image guidance 1.5, seed 42). For a reward model the
condition defaults to the best one (scores 5,5,5 and feedback "None; None; None"); ``--reward`` and
``--feedback`` are errors for a stock model. The output is written atomically; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

SCHEDULER_CHOICES = ("euler_ancestral", "euler", "ddim")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")


class EditError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _log(message: str) -> None:
    print(f"edit: {message}", file=sys.stderr, flush=True)


def parse_scores(text: str, flag: str = "--reward") -> tuple[float, float, float]:
    """``"5,5,5"`` -> (5.0, 5.0, 5.0): three scores in 0..5 (following, preserving, quality)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        scores = tuple(float(p) for p in parts)
    except ValueError:
        raise EditError(f"{flag} must be three comma-separated numbers like 5,5,5; got {text!r}") from None
    if len(scores) != 3 or not all(math.isfinite(s) for s in scores):
        raise EditError(f"{flag} must be three comma-separated numbers like 5,5,5; got {text!r}")
    if not all(0.0 <= s <= 5.0 for s in scores):
        raise EditError(f"{flag} scores must be in 0..5; got {text!r}")
    return scores


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed_help: str) -> None:
    """The sampling flags ``edit`` and ``evaluate`` share: reward, guidances, steps, scheduler, dtype."""
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
        "--reward-guidance",
        type=float,
        help="reward guidance scale: eps += g (e(reward) - e(low reward)); off by default (reward models)",
    )
    p.add_argument("--low-reward", default="0,0,0", help="scores of the low-reward branch (default 0,0,0)")
    p.add_argument(
        "--low-feedback", default="", help="feedback text of the low-reward branch (default empty)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.edit",
        description="Edit an image following an instruction (InstructPix2Pix / Reward-Edit).",
    )
    p.add_argument(
        "--model", required=True, help="diffusers pipeline folder, Flax model directory or training workdir"
    )
    p.add_argument("--image", required=True, help="input image file")
    p.add_argument("--instruction", required=True, help="the edit instruction")
    p.add_argument("--out", required=True, help="output image file (PNG)")
    add_sampling_arguments(p, seed_help="random seed (default 42)")
    p.add_argument("--resolution", type=int, default=512, help="long side of the fitted input (default 512)")
    return p


def _check_args(args) -> None:
    image, model, out = Path(args.image), Path(args.model), Path(args.out)
    if not image.exists():
        raise EditError(f"{image}: no such image file")
    if not image.is_file():
        raise EditError(f"{image}: not a file")
    if not model.exists():
        raise EditError(f"{model}: no such model folder")
    if not model.is_dir():
        raise EditError(f"{model}: not a model folder")
    if out.exists() and out.is_dir():
        raise EditError(f"{out}: is a folder; give an output file name")
    if out.suffix.lower() != ".png":
        raise EditError(f"{out}: the output must be a .png file")
    if args.steps < 1:
        raise EditError(f"--steps must be positive; got {args.steps}")
    if args.resolution < 64:
        raise EditError(f"--resolution must be at least 64; got {args.resolution}")
    if args.reward is not None:
        parse_scores(args.reward)
    parse_scores(args.low_reward, "--low-reward")


def _read_image(path: Path, resolution: int):
    from PIL import UnidentifiedImageError

    from rewardedit_jax.sampling import load_edit_image

    try:
        return load_edit_image(path, resolution)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise EditError(f"{path}: cannot read the image ({reason})") from None


def write_png_atomically(image, out: Path) -> None:
    """Write ``image`` (H, W, 3) uint8 to ``out`` via a temporary file in the same folder and a rename."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args) -> None:
    _check_args(args)
    source = _read_image(Path(args.image), args.resolution)
    _log(f"input {args.image} fitted to {source.shape[1]}x{source.shape[0]}")

    import jax
    import jax.numpy as jnp

    from rewardedit_jax.convert import ConversionError, load_pipeline
    from rewardedit_jax.sampling import EditSampler
    from rewardedit_jax.schedule import ScheduleError

    dtype_name = args.dtype
    if dtype_name == "auto":
        dtype_name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    dtype = jnp.dtype(dtype_name)
    start = time.perf_counter()
    _log(f"loading {args.model} ({dtype_name})")
    try:
        pipeline = load_pipeline(args.model, param_dtype=dtype, compute_dtype=dtype)
    except ConversionError as e:
        raise EditError(str(e)) from None
    _log(f"loaded in {time.perf_counter() - start:.1f} s")
    has_reward = bool(pipeline.unet.has_reward)
    reward_flags = [
        flag
        for flag, value in (
            ("--reward", args.reward),
            ("--feedback", args.feedback),
            ("--reward-guidance", args.reward_guidance),
        )
        if value is not None
    ]
    if reward_flags and not has_reward:
        raise EditError(
            f"{args.model} is not a reward model; {', '.join(reward_flags)} apply to reward models only"
        )
    reward = {}
    if has_reward:
        reward = {
            "reward_scores": parse_scores(args.reward) if args.reward is not None else None,
            "feedback": args.feedback,
        }
        if args.reward_guidance is not None:
            reward.update(
                reward_guidance=args.reward_guidance,
                low_reward_scores=parse_scores(args.low_reward, "--low-reward"),
                low_feedback=args.low_feedback,
            )
        shown = args.reward or "5,5,5"
        _log(f"reward condition {shown} / {args.feedback or 'None; None; None'!r}")
        if args.reward_guidance is not None:
            _log(f"reward guidance {args.reward_guidance} against {args.low_reward} / {args.low_feedback!r}")
    try:
        sampler = EditSampler.from_pipeline(pipeline, scheduler=args.scheduler, dtype=dtype, log=_log)
    except ScheduleError as e:
        raise EditError(f"{args.model}: {e}") from None
    _log(
        f"sampling {args.steps} steps ({args.scheduler}), "
        f"text guidance {args.text_guidance}, image guidance {args.image_guidance}"
    )
    start = time.perf_counter()
    out = sampler(
        source,
        args.instruction,
        num_steps=args.steps,
        text_guidance=args.text_guidance,
        image_guidance=args.image_guidance,
        seed=args.seed,
        **reward,
    )
    _log(f"edited in {time.perf_counter() - start:.1f} s (including compilation)")
    write_png_atomically(out.images[0], Path(args.out))
    _log(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except EditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
