"""Edit images with instructions: ``python -m rewardedit_jax.edit``.

    python -m rewardedit_jax.edit --model PATH --image IN.jpg --instruction "make it snowy" --out OUT.png \\
        [--reward 5,5,5] [--feedback "None; None; None"] [--steps 30] [--text-guidance 7.5] \\
        [--image-guidance 1.5] [--seed 42] [--resolution 512] [--scheduler euler_ancestral]
    python -m rewardedit_jax.edit --model PATH --image A.jpg --image B.jpg --instruction "make it snowy" \\
        --out OUTDIR [--batch-size 8] [--shared-noise]

``PATH`` is a diffusers pipeline folder or a Flax model directory (``python -m rewardedit_jax.convert
import``). The input is fitted like the official protocol (long side about ``--resolution``, both sides
multiples of 64, centre crop + LANCZOS; docs/sources.md, "Generation settings") and edited with the
official settings by default (Euler ancestral, 30 steps, text guidance 7.5, image guidance 1.5, seed 42).
For a reward model the
condition defaults to the best one (scores 5,5,5 and feedback "None; None; None"); ``--reward`` and
``--feedback`` are errors for a stock model. The output is written atomically; progress goes to stderr.

Several edits (``--image`` and/or ``--instruction`` repeated: one instruction for all images, one image for
all instructions, or pairs in order) go to the folder ``--out`` as ``<i>_<image name>.png``. Edit i is seeded
with ``--seed`` + i (``--shared-noise``: every edit with ``--seed``), and the edits are sampled by
:func:`rewardedit_jax.parallel.generate`: grouped by fitted size, ``--batch-size`` edits per device per call,
sharded over all local devices and, in a multi-host job (``--coordinator-address`` ...), over all hosts.
``--model``, ``--image`` and ``--out`` may be remote URLs (``gs://...``, :mod:`rewardedit_jax.io`).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time

import numpy as np

from rewardedit_jax.io import PathError, atomic_write_bytes, check_bucket, read_bytes, to_path
from rewardedit_jax.parallel import add_distributed_arguments, initialize_distributed

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
    p.add_argument(
        "--image", required=True, action="append", help="input image file (repeat it to edit several images)"
    )
    p.add_argument(
        "--instruction",
        required=True,
        action="append",
        help="the edit instruction: one for every image, or one per --image (repeated, in order)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output image file (PNG); with several edits a folder, edit i written as <i>_<image name>.png",
    )
    add_sampling_arguments(p, seed_help="random seed; edit i of several is seeded with seed + i (default 42)")
    p.add_argument("--shared-noise", action="store_true", help="several edits: seed every one with --seed")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="several edits: edits per device per sampler call (default 8)",
    )
    p.add_argument("--resolution", type=int, default=512, help="long side of the fitted input (default 512)")
    add_distributed_arguments(p)
    return p


def edit_pairs(images: list[str], instructions: list[str]) -> list[tuple[str, str]]:
    """(image, instruction) of every edit: one instruction for all images, one image for all instructions,
    or one per image."""
    if len(instructions) == 1 or len(images) == 1 or len(images) == len(instructions):
        count = max(len(images), len(instructions))
        return [(images[i % len(images)], instructions[i % len(instructions)]) for i in range(count)]
    raise EditError(
        f"--image is given {len(images)} times and --instruction {len(instructions)} times; "
        "give one instruction for all images or one per image"
    )


def output_paths(out: str, pairs: list[tuple[str, str]]) -> list:
    """Where each edit is written: ``--out`` itself for one edit, ``OUT/<i>_<image name>.png`` for several."""
    out = to_path(out)
    if len(pairs) == 1:
        return [out]
    return [out / f"{i:04d}_{to_path(image).stem}.png" for i, (image, _) in enumerate(pairs)]


def _check_args(args) -> None:
    pairs = edit_pairs(args.image, args.instruction)
    try:
        model, out = to_path(args.model), to_path(args.out)
        check_bucket(out)  # before the model is loaded and sampled
        images = [to_path(image) for image in dict.fromkeys(args.image)]
    except PathError as e:
        raise EditError(str(e)) from None
    for image in images:
        if not image.exists():
            raise EditError(f"{image}: no such image file")
        if not image.is_file():
            raise EditError(f"{image}: not a file")
    if not model.exists():
        raise EditError(f"{model}: no such model folder")
    if not model.is_dir():
        raise EditError(f"{model}: not a model folder")
    if len(pairs) == 1 and out.exists() and out.is_dir():
        raise EditError(f"{out}: is a folder; give an output file name")
    if len(pairs) == 1 and out.suffix.lower() != ".png":
        raise EditError(f"{out}: the output must be a .png file")
    if len(pairs) > 1 and (out.suffix.lower() == ".png" or (out.exists() and not out.is_dir())):
        raise EditError(f"{out}: {len(pairs)} edits are written to a folder; give a folder, not a file")
    if args.batch_size < 1:
        raise EditError(f"--batch-size must be positive; got {args.batch_size}")
    if args.steps < 1:
        raise EditError(f"--steps must be positive; got {args.steps}")
    if not 0 <= args.seed < 2**32:
        raise EditError(f"--seed must be in 0..{2**32 - 1}; got {args.seed}")
    if args.resolution < 64:
        raise EditError(f"--resolution must be at least 64; got {args.resolution}")
    if args.reward is not None:
        parse_scores(args.reward)
    parse_scores(args.low_reward, "--low-reward")


def _read_image(path: str | os.PathLike, resolution: int):
    from PIL import UnidentifiedImageError

    from rewardedit_jax.sampling import load_edit_image

    try:
        return load_edit_image(io.BytesIO(read_bytes(path)), resolution)
    except PathError as e:
        raise EditError(str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise EditError(f"{path}: cannot read the image ({reason})") from None


def write_png_atomically(image, out: str | os.PathLike) -> None:
    """Write ``image`` (H, W, 3) uint8 as a PNG to ``out`` (local or remote), atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())


def run(args) -> None:
    _check_args(args)
    pairs = edit_pairs(args.image, args.instruction)
    sources = {}  # image path -> fitted image
    for image, _ in pairs:
        if image not in sources:
            sources[image] = _read_image(image, args.resolution)
            _log(f"input {image} fitted to {sources[image].shape[1]}x{sources[image].shape[0]}")

    import jax
    import jax.numpy as jnp

    from rewardedit_jax import parallel
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
    except (ConversionError, PathError) as e:
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
    mesh = parallel.local_mesh()  # several edits: each sampler call sharded over this host's devices
    try:
        sampler = EditSampler.from_pipeline(
            pipeline, scheduler=args.scheduler, dtype=dtype, mesh=mesh, log=_log
        )
    except ScheduleError as e:
        raise EditError(f"{args.model}: {e}") from None
    hosts, host = parallel.hosts()
    where = f" on {parallel.sampler_devices(sampler)} devices" if mesh is not None else ""
    where += f" of each of {hosts} hosts" if hosts > 1 else ""
    _log(
        f"sampling {len(pairs)} edit{'s' * (len(pairs) > 1)}{where}: {args.steps} steps ({args.scheduler}), "
        f"text guidance {args.text_guidance}, image guidance {args.image_guidance}"
    )
    paths = output_paths(args.out, pairs)
    jobs = [
        parallel.EditJob(
            sources[image], instruction, args.seed if args.shared_noise else (args.seed + i) % 2**32, paths[i]
        )
        for i, (image, instruction) in enumerate(pairs)
    ]
    start = time.perf_counter()
    try:
        made = parallel.generate(
            sampler,
            jobs,
            lambda job, edited: write_png_atomically(edited, job.key),
            batch_size=args.batch_size,
            hosts=hosts,
            host=host,
            num_steps=args.steps,
            text_guidance=args.text_guidance,
            image_guidance=args.image_guidance,
            **reward,
        )
    except PathError as e:
        raise EditError(str(e)) from None
    made = int(parallel.gather(np.int64(made)).sum())  # every host's edits written
    _log(f"edited in {time.perf_counter() - start:.1f} s (including compilation)")
    _log(f"wrote {args.out}" if len(pairs) == 1 else f"wrote {made} edits to {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        run(args)
    except (EditError, PathError) as e:  # PathError: a remote file that cannot be read or written
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
