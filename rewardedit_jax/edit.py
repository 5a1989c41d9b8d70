"""Edit images with instructions: ``python -m rewardedit_jax.edit``.

    python -m rewardedit_jax.edit --model PATH --image IN.jpg --instruction "make it snowy" --out OUT.png \\
        [--reward 5,5,5] [--feedback "None; None; None"] [--steps 30] [--text-guidance 7.5] \\
        [--image-guidance 1.5] [--seed 42] [--resolution 512] [--scheduler euler_ancestral]
    python -m rewardedit_jax.edit --model PATH --image A.jpg --image B.jpg --instruction "make it snowy" \\
        --out OUTDIR [--batch-size 16] [--shared-noise]

``PATH`` is a diffusers pipeline folder, a Flax model directory (``python -m rewardedit_jax.convert
import``) or a Hugging Face Hub id, ``owner/name`` or ``owner/name@revision`` (downloaded into the Hugging
Face cache, after every other flag is checked: :mod:`rewardedit_jax.hub`). The input is fitted like the
official protocol (long side about ``--resolution``, both sides multiples of 64, centre crop + LANCZOS;
docs/sources.md, "Generation settings") and edited with the official settings by default (Euler
ancestral, 30 steps, text guidance 7.5, image guidance 1.5, seed 42). For a reward model the condition
defaults to the best one (scores 5,5,5 and feedback "None; None; None"); ``--reward`` and ``--feedback``
are errors for a stock model. The output is written atomically; progress goes to stderr.

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
import os
import sys
import time

import numpy as np

from rewardedit_jax import hub
from rewardedit_jax.cli import (
    DEFAULT_BATCH_SIZE,
    UsageError,
    add_distributed_arguments,
    add_sampling_arguments,
    parse_scores,
    run_main,
)
from rewardedit_jax.io import PathError, check_bucket, read_bytes, to_path
from rewardedit_jax.report import atomic_write_png

# edit's user-facing errors are the command-line helpers' (one line, exit status 2).
EditError = UsageError


def _log(message: str) -> None:
    print(f"edit: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.edit",
        description="Edit an image following an instruction (InstructPix2Pix / Reward-Edit).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="diffusers pipeline folder, Flax model directory, training workdir, or Hugging Face Hub id "
        "owner/name[@revision]",
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
        default=DEFAULT_BATCH_SIZE,
        help=f"several edits: edits per device per sampler call (default {DEFAULT_BATCH_SIZE})",
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


def _check_args(args) -> str | os.PathLike:
    """Check every flag; returns the model folder (a Hub id resolved last, once the rest is known good)."""
    pairs = edit_pairs(args.image, args.instruction)
    hub_id = hub.parse_hub_id(args.model)
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
    if hub_id is None and not model.exists():
        raise EditError(f"{model}: no such model folder")
    if hub_id is None and not model.is_dir():
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
    if hub_id is None:
        return args.model
    return hub.fetch(*hub_id, log=_log).folder


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


def run(args) -> None:
    model = _check_args(args)
    pairs = edit_pairs(args.image, args.instruction)
    sources = {}  # image path -> fitted image
    for image, _ in pairs:
        if image not in sources:
            sources[image] = _read_image(image, args.resolution)
            _log(f"input {image} fitted to {sources[image].shape[1]}x{sources[image].shape[0]}")

    import jax.numpy as jnp

    from rewardedit_jax import parallel
    from rewardedit_jax.convert import ConversionError, load_pipeline
    from rewardedit_jax.sampling import EditSampler, resolve_dtype
    from rewardedit_jax.schedule import ScheduleError

    dtype_name = resolve_dtype(args.dtype)
    dtype = jnp.dtype(dtype_name)
    start = time.perf_counter()
    _log(f"loading {args.model} ({dtype_name})")
    try:
        pipeline = load_pipeline(model, param_dtype=dtype, compute_dtype=dtype)
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
            pipeline, scheduler=args.scheduler, dtype=dtype, mesh=mesh, attention=args.attention, log=_log
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
            lambda job, edited: atomic_write_png(job.key, edited),
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
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
