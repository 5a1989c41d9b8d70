"""Edit images with instructions: ``python -m rewardedit_jax.edit``.

    python -m rewardedit_jax.edit --model PATH --image IN.jpg --instruction "make it snowy" --out OUT.png \\
        [--reward 5,5,5] [--feedback "None; None; None"] [--steps 30] [--text-guidance 7.5] \\
        [--image-guidance 1.5] [--seed 42] [--resolution N] [--scheduler euler_ancestral]
    python -m rewardedit_jax.edit --model PATH --image A.jpg --image B.jpg --instruction "make it snowy" \\
        --out OUTDIR [--batch-size 16] [--shared-noise]

``PATH`` is a diffusers pipeline folder, a Flax model directory (``python -m rewardedit_jax.convert
import``) or a Hugging Face Hub id, ``owner/name`` or ``owner/name@revision`` (downloaded into the Hugging
Face cache, after every other flag is checked: :mod:`rewardedit_jax.hub`). The input is fitted like the
official protocol (long side about ``--resolution``, both sides multiples of 64, centre crop + LANCZOS;
docs/sources.md, "Generation settings"; below 64 px, multiples of the VAE factor). ``--resolution``
defaults to the one the model records (its U-Net config's ``sample_size`` times the VAE factor, as
diffusers reads it; the trainer records its training resolution there), else 512. An edit the memory
estimate says cannot fit is refused before sampling with the resolution that would fit, and an output
that cannot be written before the model is loaded. It is edited with the official settings by default (Euler
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
    model_parser,
    parse_scores,
    run_main,
)
from rewardedit_jax.io import PathError, check_creatable, read_bytes, read_json, to_path
from rewardedit_jax.report import atomic_write_png

# rewardedit_jax.sampling's DEFAULT_RESOLUTION (the official protocol's long side, for a model that records
# none) and SIZE_MULTIPLE (sides of fitted inputs from 64 px up), spelled out so that checking the flags
# does not import flax.
DEFAULT_RESOLUTION = 512
SIZE_MULTIPLE = 64

# edit's user-facing errors are the command-line helpers' (one line, exit status 2).
EditError = UsageError


def _log(message: str) -> None:
    print(f"edit: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = model_parser(
        "python -m rewardedit_jax.edit",
        "Edit an image following an instruction (InstructPix2Pix / Reward-Edit).",
        what="training workdir",
    )
    several = {"required": True, "action": "append"}
    for flag, options, text in (
        ("--image", several, "input image file (repeat it to edit several images)"),
        (
            "--instruction",
            several,
            "the edit instruction: one for every image, or one per --image (in order)",
        ),
        (
            "--out",
            {"required": True},
            "output PNG; with several edits a folder, edit i as <i>_<image name>.png",
        ),
    ):
        p.add_argument(flag, help=text, **options)
    add_sampling_arguments(p, seed_help="random seed; edit i of several is seeded with seed + i (default 42)")
    p.add_argument("--shared-noise", action="store_true", help="several edits: seed every one with --seed")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"several edits: edits per device per sampler call (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--resolution",
        type=int,
        help=f"long side of the fitted input (default: the model's recorded one, else {DEFAULT_RESOLUTION})",
    )
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


def check_model(model: str) -> tuple[str, str | None] | None:
    """Check ``--model`` without loading it: a local or remote folder that exists, or a Hub id (returned,
    ``(repo id, revision)``, for :func:`model_folder` to fetch once everything else is known good)."""
    hub_id = hub.parse_hub_id(model)
    if hub_id is not None:
        return hub_id
    try:
        path = to_path(model)
    except PathError as e:
        raise EditError(str(e)) from None
    if not path.exists():
        raise EditError(f"{path}: no such model folder")
    if not path.is_dir():
        raise EditError(f"{path}: not a model folder")
    return None


def model_folder(model: str, hub_id: tuple[str, str | None] | None, log=None) -> str | os.PathLike:
    """What the loaders read for ``model``: the folder itself, or the Hub model's local snapshot."""
    return model if hub_id is None else hub.fetch(*hub_id, log=log or _log).folder


def model_resolution(folder: str | os.PathLike) -> tuple[int | None, int]:
    """(the resolution the model records or None, its VAE's downsampling factor), read from the configs
    of a pipeline folder, Flax model directory or training workdir without loading any weights."""
    from rewardedit_jax.convert.pipeline import files_root
    from rewardedit_jax.models.vae import (
        IdentityConfig,
        UnsupportedConfigError,
        VAEConfig,
        is_identity_config,
    )

    root = files_root(folder)
    try:
        vae = read_json(root / "vae" / "config.json")
        size = read_json(root / "unet" / "config.json").get("sample_size")
    except (FileNotFoundError, PathError):
        return None, 1  # not a whole pipeline: loading it says so
    try:
        factor = (
            IdentityConfig() if is_identity_config(vae) else VAEConfig.from_diffusers(vae)
        ).downsample_factor
    except UnsupportedConfigError as e:
        raise EditError(f"{root / 'vae' / 'config.json'}: {e}") from None
    recorded = size * factor if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
    return recorded, factor


def fit_settings(folder: str | os.PathLike, resolution: int | None, flag: str = "--resolution") -> tuple:
    """(resolution, side multiple, recorded resolution or None) an input is fitted with for the model at
    ``folder``: ``resolution`` or the model's recorded one (else 512); sides are multiples of 64 from 64 px
    up (the official protocol), of the VAE factor below."""
    recorded, factor = model_resolution(folder)
    resolution = resolution or recorded or DEFAULT_RESOLUTION
    if resolution < factor:
        raise EditError(f"{flag} must be at least {factor} (the model's VAE factor); got {resolution}")
    return resolution, SIZE_MULTIPLE if resolution >= SIZE_MULTIPLE else factor, recorded


def check_writable(out, folder: bool) -> None:
    """Fail with one line unless the edits can be written at ``out`` (a file, or a ``folder``), before any
    model is loaded; nothing is created until an edit is written."""
    try:
        check_creatable(out, "--out", file=not folder)
    except PathError as e:
        raise EditError(str(e)) from None


def _check_args(args) -> str | os.PathLike:
    """Check every flag; returns the model folder (a Hub id resolved last, once the rest is known good)."""
    pairs = edit_pairs(args.image, args.instruction)
    try:
        out = to_path(args.out)
        images = [to_path(image) for image in dict.fromkeys(args.image)]
    except PathError as e:
        raise EditError(str(e)) from None
    for image in images:
        if not image.exists():
            raise EditError(f"{image}: no such image file")
        if not image.is_file():
            raise EditError(f"{image}: not a file")
    hub_id = check_model(args.model)
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
    if args.resolution is not None and args.resolution < 1:
        raise EditError(f"--resolution must be positive; got {args.resolution}")
    if args.reward is not None:
        parse_scores(args.reward)
    parse_scores(args.low_reward, "--low-reward")
    check_writable(args.out, folder=len(pairs) > 1)
    return model_folder(args.model, hub_id)


def _read_image(path: str | os.PathLike, resolution: int, multiple: int = SIZE_MULTIPLE):
    from PIL import UnidentifiedImageError

    from rewardedit_jax.sampling import load_edit_image

    try:
        return load_edit_image(io.BytesIO(read_bytes(path)), resolution, multiple)
    except PathError as e:
        raise EditError(str(e)) from None
    except UnidentifiedImageError:  # PIL's message names its BytesIO, not the file
        raise EditError(f"{path}: cannot read the image (not an image file PIL can open)") from None
    except (OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise EditError(f"{path}: cannot read the image ({reason})") from None


# ---------------------------------------------------------------------------------------- memory


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def available_memory() -> tuple[int | None, str]:
    """(bytes an edit may still use, where): the first local device's free memory, or on a CPU the host's
    available memory; None when the backend does not say."""
    import jax

    device = jax.local_devices()[0]
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                info = dict(line.split(":", 1) for line in f)
            return int(info["MemAvailable"].split()[0]) * 1024, "this machine (CPU)"
        except (OSError, KeyError, ValueError):
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine (CPU)"
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None, device.device_kind
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{device.device_kind}"


def estimate_bytes(pipeline, height: int, width: int, batch: int, *, branches: int, flash: bool) -> int:
    """About how much memory one sampler call of ``batch`` edits of ``height`` x ``width`` needs.

    A copy of the parameters (the sampler's); activations of the U-Net (every branch of every edit at the
    latent size, its first level's channels) and of the VAE decoder at the image size; and, unless
    attention is flash attention (cuDNN), three float32 copies (scores, exponentials, probabilities) of
    the largest attention level's (tokens x tokens) scores per head, which dominate at large sizes: XLA's
    CPU program for the demo's 16 px model at 512 px asks for 619 GB, about what this gives."""
    import jax
    from flax import nnx

    params = sum(
        leaf.size * leaf.dtype.itemsize
        for model in (pipeline.unet, pipeline.vae, pipeline.text_encoder)
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))
    )
    f = pipeline.vae.config.downsample_factor
    h, w = -(-height // f), -(-width // f)
    cfg = pipeline.unet.config
    n = batch * branches
    levels = len(cfg.block_out_channels)
    attention_levels = {
        level
        for level in range(levels)
        if "CrossAttn" in cfg.down_block_types[level] or "CrossAttn" in cfg.up_block_types[levels - 1 - level]
    }
    if attention_levels:
        attention_levels.add(levels - 1)  # the mid block's
    scores = 0
    if not flash:
        for level in attention_levels:
            tokens = -(-h // 2**level) * -(-w // 2**level)
            scores = max(scores, 3 * n * cfg.num_attention_heads[level] * tokens * tokens * 4)
    activations = 8 * n * h * w * cfg.block_out_channels[0] * 4
    vae_channels = getattr(pipeline.vae.config, "block_out_channels", (0,))[0]
    decoder = 8 * batch * height * width * max(vae_channels, 3) * 4
    if not flash and vae_channels and getattr(pipeline.vae.config, "mid_block_add_attention", False):
        decoder = max(decoder, 3 * batch * (h * w) ** 2 * 4)  # the VAE mid block's, at the latent size
    return params + scores + activations + decoder


def check_memory(
    pipeline,
    sizes: dict[tuple[int, int], int],
    *,
    branches: int,
    attention: str,
    multiple: int,
    recorded: int | None,
    flag: str = "--resolution",
) -> None:
    """Refuse, with one line saying what would fit, sampler calls (``{(height, width): per-device
    batch}``) the estimate says the device cannot hold."""
    import jax

    available, where = available_memory()
    if available is None:
        return
    flash = jax.default_backend() == "gpu" and attention != "xla"
    for (height, width), batch in sorted(sizes.items()):
        need = estimate_bytes(pipeline, height, width, batch, branches=branches, flash=flash)
        if need <= available:
            continue
        side = max(height, width)
        fits = [
            r
            for r in range(multiple, side, multiple)
            if estimate_bytes(pipeline, r, r, 1, branches=branches, flash=flash) <= available
        ]
        trained = f" (the model was trained at {recorded})" if recorded else ""
        advice = f"{flag} {fits[-1]} or less would fit{trained}" if fits else "nothing smaller fits either"
        if (
            batch > 1
            and estimate_bytes(pipeline, height, width, 1, branches=branches, flash=flash) <= available
        ):
            advice = f"a smaller --batch-size would fit; or {advice}"
        raise EditError(
            f"an edit at {width}x{height} ({batch} per call, {branches} guidance branches) needs about "
            f"{_gb(need)} of memory, more than the {_gb(available)} available on {where}; {advice}"
        )


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is XLA running out of memory (an allocation the estimate let through)."""
    return "RESOURCE_EXHAUSTED" in str(error)


def memory_error(error: BaseException, what: str) -> EditError:
    first = " ".join(str(error).split())[:200]
    return EditError(f"out of memory {what} ({first}); try a smaller --resolution or --batch-size")


# ---------------------------------------------------------------------------------------- sampling


def reward_condition(args_or_settings, has_reward: bool) -> dict:
    """The sampler's reward keyword arguments of a reward model from ``reward``, ``feedback``,
    ``reward_guidance``, ``low_reward`` and ``low_feedback`` (strings as the flags give them)."""
    s = args_or_settings
    if not has_reward:
        return {}
    reward = {
        "reward_scores": parse_scores(s.reward) if s.reward is not None else None,
        "feedback": s.feedback,
    }
    if s.reward_guidance is not None:
        reward.update(
            reward_guidance=s.reward_guidance,
            low_reward_scores=parse_scores(s.low_reward, "--low-reward"),
            low_feedback=s.low_feedback,
        )
    return reward


def guidance_branches(text_guidance: float, image_guidance: float, reward_guidance: float | None) -> int:
    """U-Net branches per edit (the sampler's rule: classifier-free guidance when text > 1 and image >= 1)."""
    return (3 if text_guidance > 1.0 and image_guidance >= 1.0 else 1) + (reward_guidance is not None)


def run(args) -> None:
    model = _check_args(args)
    resolution, multiple, recorded = fit_settings(model, args.resolution)
    pairs = edit_pairs(args.image, args.instruction)
    sources = {}  # image path -> fitted image
    for image, _ in pairs:
        if image not in sources:
            sources[image] = _read_image(image, resolution, multiple)
    where = "given" if args.resolution else "recorded by the model" if recorded else "the default"
    for image, fitted in sources.items():
        height, width = fitted.shape[:2]
        _log(f"input {image} fitted to {width}x{height} (resolution {resolution}, {where})")

    from rewardedit_jax import parallel

    pipeline = load(args.model, model, args.dtype)
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
    reward = reward_condition(args, has_reward)
    if has_reward:
        _log(f"reward condition {args.reward or '5,5,5'} / {args.feedback or 'None; None; None'!r}")
        if args.reward_guidance is not None:
            _log(f"reward guidance {args.reward_guidance} against {args.low_reward} / {args.low_feedback!r}")
    hosts, host = parallel.hosts()
    counts: dict[tuple[int, int], int] = {}
    for image, _ in pairs:
        counts[sources[image].shape[:2]] = counts.get(sources[image].shape[:2], 0) + 1
    check_memory(
        pipeline,
        {size: min(args.batch_size, count) for size, count in counts.items()},
        branches=guidance_branches(args.text_guidance, args.image_guidance, args.reward_guidance),
        attention=args.attention,
        multiple=multiple,
        recorded=recorded,
    )
    mesh = parallel.local_mesh()  # several edits: each sampler call sharded over this host's devices
    sampler = make_sampler(args.model, pipeline, args.scheduler, args.dtype, args.attention, mesh)
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
    settings = {
        "num_steps": args.steps,
        "text_guidance": args.text_guidance,
        "image_guidance": args.image_guidance,
        **reward,
    }
    try:
        made = parallel.generate(
            sampler, jobs, lambda job, edited: atomic_write_png(job.key, edited), batch_size=args.batch_size,
            hosts=hosts, host=host, **settings,
        )  # fmt: skip
    except PathError as e:
        raise EditError(str(e)) from None
    except Exception as e:
        if out_of_memory(e):
            raise memory_error(e, "sampling") from None
        raise
    made = int(parallel.gather(np.int64(made)).sum())  # every host's edits written
    _log(f"edited in {time.perf_counter() - start:.1f} s (including compilation)")
    _log(f"wrote {args.out}" if len(pairs) == 1 else f"wrote {made} edits to {args.out}")


def load(name: str, folder: str | os.PathLike, dtype_name: str, log=None):
    """The pipeline at ``folder`` (``name`` as the user gave it) in ``dtype_name`` (``auto`` resolved)."""
    import jax.numpy as jnp

    from rewardedit_jax.convert import ConversionError, load_pipeline
    from rewardedit_jax.sampling import resolve_dtype

    log = log or _log
    dtype = jnp.dtype(resolve_dtype(dtype_name))
    start = time.perf_counter()
    log(f"loading {name} ({dtype.name})")
    try:
        pipeline = load_pipeline(folder, param_dtype=dtype, compute_dtype=dtype)
    except (ConversionError, PathError) as e:
        raise EditError(str(e)) from None
    log(f"loaded in {time.perf_counter() - start:.1f} s")
    return pipeline


def make_sampler(name: str, pipeline, scheduler: str, dtype_name: str, attention: str, mesh, log=None):
    """The jitted sampler of ``pipeline`` (one line naming ``name`` when its scheduler is unusable)."""
    import jax.numpy as jnp

    from rewardedit_jax.sampling import EditSampler, resolve_dtype
    from rewardedit_jax.schedule import ScheduleError

    try:
        return EditSampler.from_pipeline(
            pipeline,
            scheduler=scheduler,
            dtype=jnp.dtype(resolve_dtype(dtype_name)),
            mesh=mesh,
            attention=attention,
            log=log or _log,
        )
    except ScheduleError as e:
        raise EditError(f"{name}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
