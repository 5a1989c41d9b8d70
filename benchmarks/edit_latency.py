"""Edit latency at 512 px: rewardedit_jax's jitted sampler against diffusers' InstructPix2Pix pipeline.

One edit = tokenize, text encoder, VAE encode, ``--steps`` (30) Euler-ancestral U-Net steps with
InstructPix2Pix guidance (three CFG branches stacked into one U-Net batch of 3B; text 7.5, image 1.5),
VAE decode, images back on the host. Ours is ``rewardedit_jax.sampling.EditSampler`` (the whole edit is
one compiled XLA program); the peer is diffusers' ``StableDiffusionInstructPix2PixPipeline`` (or, with
``--reward``, ``rewardedit_jax.torch_compat.RewardEditPipeline``) on the same SD 1.5-size architecture
with random weights, eager and with the U-Net under ``torch.compile``, in the same run, each side in its
own subprocess. Batch 1 and 8 by default; the median of ``--iters`` edits after one warm-up edit (the
warm-up compiles).

    python benchmarks/edit_latency.py --tiny --skip-compile          # CPU smoke, ~30 s
    python benchmarks/edit_latency.py --batch 1 8 --json e.json      # H100 (benchmarks/run_gpu.sh)

The peer of docs/sources.md, "Peer performance numbers" (H100, fp16, batch 1): eager 0.82-1.61 s, U-Net
under torch.compile 0.43 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from rewardedit_jax.configs.components import tiny_text_config, vae_config  # noqa: E402
from rewardedit_jax.configs.sd15 import SD15_SCHEDULER  # noqa: E402
from rewardedit_jax.tokenizer import write_word_tokenizer  # noqa: E402

SCHEDULER_CONFIG = SD15_SCHEDULER  # SD 1.5 / InstructPix2Pix
TEXT_GUIDANCE = 7.5
IMAGE_GUIDANCE = 1.5
INSTRUCTION = "make it look like a snowy winter evening"
SEED = 42
TINY_VAE = vae_config([16, 16], norm_num_groups=8, scaling_factor=0.18215)  # the tiny smoke VAE
REAL_EDIT_EDITS = 560  # 80 images x 7 instructions (docs/evaluation.md)
SIDES = ("jax", "torch-eager", "torch-compile")
NOTES = {
    "jax": "first call compiles the whole edit (one XLA program)",
    "torch-eager": "first call is the warm-up",
    "torch-compile": "first call compiles the U-Net",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke: tiny models, 32 px, 2 steps, batch 1 2")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 8, tiny 1 2)")
    p.add_argument("--resolution", type=int, help="image side in pixels (default 512, tiny 32)")
    p.add_argument(
        "--size",
        help="WIDTHxHEIGHT of the images instead of a square --resolution, e.g. 512x384 (a 4:3 photo after "
        "the editing fit)",
    )
    p.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="ours: after timing, profile N more edits at the first batch size and print device time by "
        "kernel category",
    )  # fmt: skip
    p.add_argument("--steps", type=int, help="sampler steps (default 30, tiny 2)")
    p.add_argument("--iters", type=int, help="timed edits per batch size; the median is reported (default 5)")
    p.add_argument("--attention", choices=("xla", "cudnn", "auto", "auto_padded"), default="auto")
    p.add_argument(
        "--dtype", choices=("bf16", "fp32"), default="bf16", help="both sides' weights/activations"
    )
    p.add_argument("--reward", action="store_true", help="the reward U-Net (RewardEditPipeline as the peer)")
    p.add_argument(
        "--cost-only", action="store_true",
        help="print the FLOPs of one edit (XLA cost analysis of each component lowered from abstract shapes: "
        "U-Net x steps at the guidance batch, VAE encode and decode, text encoder) and exit",
    )  # fmt: skip
    p.add_argument("--skip-jax", action="store_true")
    p.add_argument("--skip-torch", action="store_true", help="no PyTorch peer at all")
    p.add_argument("--skip-compile", action="store_true", help="no torch.compile peer (eager only)")
    p.add_argument("--skip-eager", action="store_true", help="no eager PyTorch peer (torch.compile only)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for the peer's U-Net")
    p.add_argument("--cache-dir", help="JAX persistent compilation cache directory")
    p.add_argument("--side-timeout", type=float, help="seconds per side subprocess")
    p.add_argument("--budget-s", type=float, help="seconds for all sides together (later sides are skipped)")
    p.add_argument("--json", help="write the results here (machine-readable)")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    args = p.parse_args(argv)
    defaults = dict(batch=[1, 2], resolution=32, steps=2, iters=2) if args.tiny else {}
    defaults = {**dict(batch=[1, 8], resolution=512, steps=30, iters=5), **defaults}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size:
        try:
            args.width, args.height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            p.error(f"--size must be WIDTHxHEIGHT, e.g. 512x384; got {args.size!r}")
    else:
        args.width = args.height = args.resolution
    if (args.width % 64 or args.height % 64) and not args.tiny:
        p.error("image sides must be multiples of 64 (the editing protocol)")
    return args


def components(args) -> dict:
    """diffusers/transformers configs of the U-Net, VAE and text encoder (SD 1.5 or tiny)."""
    if args.tiny:
        text = tiny_text_config(tokenizer_vocab_size())
        return {"unet": dict(common.TINY_UNET), "vae": dict(TINY_VAE), "text_encoder": text}
    from rewardedit_jax.configs.sd15 import SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE

    return {"unet": dict(SD15_UNET), "vae": dict(SD15_VAE), "text_encoder": dict(SD15_TEXT_ENCODER)}


# --- a stand-in CLIP tokenizer (no hub access on the GPU machine) ------------------------------------------


def write_tokenizer(dst: Path) -> Path:
    """A character-level CLIP tokenizer folder: the word tokenizer over no words, so CLIP's byte tokens and
    no merges. Token ids differ from SD's, lengths do not matter (every text is padded to 77), so the text
    encoder does the same work."""
    return write_word_tokenizer(dst, [])


def tokenizer_vocab_size() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return len(json.loads((write_tokenizer(Path(tmp)) / "vocab.json").read_text(encoding="utf-8")))


def input_images(batch: int, height: int, width: int):
    """Smooth random RGB images (B, H, W, 3) uint8 (not zeros: real data paths). Image i depends only on
    i, so the first image of every batch size is the same (the batch-invariance check compares them)."""
    import numpy as np

    images = []
    for i in range(batch):
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
        image = np.repeat(np.repeat(coarse, -(-height // 8), axis=0), -(-width // 8), axis=1)
        image = image[:height, :width]
        images.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return np.stack(images)


# --- our side -------------------------------------------------------------------------------------------


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rewardedit_jax.models.clip_text import build_text_encoder
    from rewardedit_jax.models.layers import count_params, fill_random_
    from rewardedit_jax.models.reward import RewardConfig
    from rewardedit_jax.models.unet import UNetConfig, build_unet
    from rewardedit_jax.models.vae import build_vae
    from rewardedit_jax.sampling import EditSampler
    from rewardedit_jax.tokenizer import load_tokenizer

    common.enable_jax_compilation_cache(args.cache_dir)
    dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
    cfgs = components(args)
    unet_cfg = UNetConfig.from_diffusers(cfgs["unet"], reward=RewardConfig() if args.reward else None)
    t0 = time.perf_counter()
    unet = fill_random_(build_unet(unet_cfg, dtype=dtype, abstract=True), seed=0)
    vae = fill_random_(build_vae(cfgs["vae"], dtype=dtype, abstract=True), seed=1)
    text_encoder = fill_random_(build_text_encoder(cfgs["text_encoder"], dtype=dtype, abstract=True), seed=2)
    init_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(write_tokenizer(Path(tmp) / "tokenizer"))
    sampler = EditSampler(
        unet,
        vae,
        text_encoder,
        tokenizer,
        SCHEDULER_CONFIG,
        scheduler="euler_ancestral",
        dtype=dtype,
        attention=args.attention,
        compiler_options=common.TINY_COMPILER_OPTIONS if args.tiny else None,
    )
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_gpu")]
    result = {
        "side": "jax",
        "label": f"rewardedit_jax EditSampler ({args.attention} attention{', ' if flags else ''}"
        f"{' '.join(flags)})",
        "params": {"unet": count_params(unet), "vae": count_params(vae), "text": count_params(text_encoder)},
        "init_s": init_s,
        "per_batch": [],
        "env": {**common.jax_environment(), "backend": jax.default_backend()},
    }
    first_image = None
    for batch in args.batch:
        images = input_images(batch, args.height, args.width)

        def edit(images=images, batch=batch):
            return sampler(
                images,
                [INSTRUCTION] * batch,
                num_steps=args.steps,
                text_guidance=TEXT_GUIDANCE,
                image_guidance=IMAGE_GUIDANCE,
                seed=SEED,
            ).images  # host numpy: the call has finished

        outputs = []
        timing = common.time_calls(edit, outputs.append, warmup=1, iters=args.iters)
        entry = {"batch": batch, "compile_s": timing["first_s"], **timing}
        # The first example has the same image and seed at every batch size: its edit must not depend on
        # the batch beyond bf16 noise (different batch shapes may pick different kernels).
        if first_image is None:
            first_image = outputs[-1][0].astype(np.int16)
        else:
            diff = np.abs(outputs[-1][0].astype(np.int16) - first_image)
            entry["vs_first_batch"] = {"mean_abs": float(diff.mean()), "max_abs": int(diff.max())}
        result["per_batch"].append(entry)
        if args.profile and len(result["per_batch"]) == 1:
            result["profile"] = common.profile_or_error(
                lambda: common.kernel_breakdown(
                    common.jax_kernel_events(edit, args.profile), args.profile, keep_all=True
                )
            )
        result["peak_memory_bytes"] = common.jax_peak_memory_bytes()
        result["compile_count"] = sampler.compile_count
        common.emit_result(result)  # after each batch size: a later one that runs out of time loses nothing
    return result


def edit_flops(args, batch: int = 1) -> dict:
    """FLOPs of one edit call of ``batch`` images, by component, from abstract shapes (no weights)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rewardedit_jax.models.clip_text import build_text_encoder
    from rewardedit_jax.models.unet import UNetConfig, build_unet
    from rewardedit_jax.models.vae import build_vae
    from rewardedit_jax.training.analysis import cost_flops

    dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
    cfgs = components(args)
    unet = build_unet(UNetConfig.from_diffusers(cfgs["unet"]), dtype=dtype, abstract=True)
    vae = build_vae(cfgs["vae"], dtype=dtype, abstract=True)
    text = build_text_encoder(cfgs["text_encoder"], dtype=dtype, abstract=True)
    f = vae.config.downsample_factor
    h, w, c = args.height // f, args.width // f, vae.config.latent_channels
    branches = 3 * batch  # the three InstructPix2Pix guidance branches, stacked

    def flops(module, fn, *shapes):
        graphdef, state = nnx.split(module)
        run = lambda state, *xs: fn(nnx.merge(graphdef, state), *xs)  # noqa: E731
        return cost_flops(jax.jit(run).lower(state, *shapes))

    sds = jax.ShapeDtypeStruct
    unet_step = flops(
        unet, lambda m, x, t, ctx: m(x, t, ctx), sds((branches, h, w, 2 * c), dtype), sds((), jnp.int32),
        sds((branches, 77, text.config.hidden_size), dtype),
    )  # fmt: skip
    parts = {
        "unet": args.steps * unet_step,
        "vae_encode": flops(
            vae, lambda m, x: m.encode(x)[0], sds((batch, args.height, args.width, 3), dtype)
        ),
        "vae_decode": flops(vae, lambda m, z: m.decode(z), sds((batch, h, w, c), dtype)),
        # instructions, the empty prompt (once per call)
        "text_encoder": flops(text, lambda m, ids: m(ids)[0], sds((batch + 1, 77), jnp.int32)),
    }
    return {"batch": batch, "unet_step": unet_step, "parts": parts, "total": sum(parts.values())}


# --- the diffusers peer ---------------------------------------------------------------------------------


def run_torch(args, compile_unet: bool) -> dict:
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cfgs = components(args)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        if args.reward:
            from rewardedit_jax.torch_compat import RewardEditPipeline, RewardUNet2DConditionModel

            unet, pipe_cls = RewardUNet2DConditionModel(**cfgs["unet"]), RewardEditPipeline
        else:
            unet = diffusers.UNet2DConditionModel(**cfgs["unet"])
            pipe_cls = diffusers.StableDiffusionInstructPix2PixPipeline
        vae = diffusers.AutoencoderKL(**cfgs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"]))
    init_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tokenizer(Path(tmp) / "tokenizer")
        tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    pipe = pipe_cls(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=diffusers.EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode)
    per_batch = []
    for batch in args.batch:
        images = input_images(batch, args.height, args.width)
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0

        def edit(batch=batch, pixels=pixels):
            generator = torch.Generator(device=device).manual_seed(SEED)
            return pipe(
                [INSTRUCTION] * batch,
                image=pixels,
                num_inference_steps=args.steps,
                guidance_scale=TEXT_GUIDANCE,
                image_guidance_scale=IMAGE_GUIDANCE,
                generator=generator,
                output_type="np",
            ).images  # numpy on the host: the call has finished

        with torch.inference_mode():
            timing = common.time_calls(edit, lambda out: out, warmup=1, iters=args.iters)
        per_batch.append({"batch": batch, **timing})
        if compile_unet:
            per_batch[-1]["compile_s"] = timing["first_s"]
    return {
        "side": "torch-compile" if compile_unet else "torch-eager",
        "label": f"diffusers {pipe_cls.__name__}{' + torch.compile U-Net' if compile_unet else ' (eager)'}",
        "init_s": init_s,
        "per_batch": per_batch,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if device == "cuda" else None,
        "env": common.torch_environment(),
    }


# --- the run ------------------------------------------------------------------------------------------------


def summarize(args, results: list[dict]) -> tuple[str, list[dict]]:
    ours = next((r for r in results if r.get("side") == "jax" and "per_batch" in r), None)
    ours_by_batch = {p["batch"]: p["median_s"] for p in (ours or {}).get("per_batch", [])}
    rows, records = [], []
    for r in results:
        label = r.get("label", r.get("side"))
        if "per_batch" not in r:
            rows.append([label, *(["n/a"] * 8), r.get("error", "")])
            records.append(r)
            continue
        for p in r["per_batch"]:
            mine = ours_by_batch.get(p["batch"])
            p["images_per_s"] = p["batch"] / p["median_s"]
            p["ours_speedup"] = p["median_s"] / mine if mine else None
            # Real-Edit's 560 edits at this batch size and image size: whole batches, the last one padded.
            p["real_edit_560_s"] = math.ceil(REAL_EDIT_EDITS / p["batch"]) * p["median_s"]
            same = p.get("vs_first_batch")
            note = NOTES[r["side"]] + (r.get("error") and f"; {r['error']}" or "")
            if same:
                note += f"; image 0 vs batch {r['per_batch'][0]['batch']}: mean |d| {same['mean_abs']:.3f}"
                note += f", max {same['max_abs']} (uint8)"
            rows.append(
                [
                    label,
                    str(p["batch"]),
                    common.fmt(p["median_s"], ".3f"),
                    common.fmt(p["images_per_s"], ".2f"),
                    common.fmt(p["first_s"], ".1f"),
                    common.fmt_bytes(r.get("peak_memory_bytes")),
                    common.fmt(p["ours_speedup"], ".2f", "x"),
                    common.fmt(p["real_edit_560_s"], ".0f"),
                    note,
                ]
            )
        records.append(r)
    header = [
        "side", "batch", "edit s (median)", "images/s", "first call s (compiles)", "peak memory",
        "ours faster by", "560 edits s (batches x median)", "note",
    ]  # fmt: skip
    lines = [common.markdown_table(header, rows)]
    gpu = any(common.is_gpu_device(r.get("env", {})) for r in results)
    standard = args.width == args.height == 512 and args.steps == 30 and not args.tiny
    if gpu and standard and 1 in ours_by_batch:
        mine = ours_by_batch[1]
        lines.append(
            "vs docs/sources.md peers (H100, fp16, batch 1, another run): eager 0.82-1.61 s -> ours "
            f"{0.82 / mine:.2f}-{1.61 / mine:.2f}x; U-Net under torch.compile 0.43 s -> ours "
            f"{0.43 / mine:.2f}x"
        )
    return "\n".join(lines), records


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cost_only:
        cost = edit_flops(args)
        parts = ", ".join(f"{k} {v / 1e12:.3f}" for k, v in cost["parts"].items())
        print(
            f"one edit at {args.width}x{args.height} px, {args.steps} steps: "
            f"{cost['total'] / 1e12:.2f} TFLOP ({parts}; "
            f"U-Net step at guidance batch 3: {cost['unet_step'] / 1e12:.3f})"
        )
        common.write_json(args.json, {"benchmark": "edit_latency", "cost": cost, "config": vars(args)})
        return 0
    if args.side == "jax":
        run_jax(args)  # emits its result after each batch size
        return 0
    if args.side in ("torch-eager", "torch-compile"):
        common.emit_result(run_torch(args, compile_unet=args.side == "torch-compile"))
        return 0

    sides = ([] if args.skip_jax else ["jax"]) + ([] if args.skip_torch else common.peer_sides(args))
    results = common.run_sides(
        Path(__file__).resolve(),
        sides,
        common.side_argv(args, exclude=("side", "json", "side_timeout", "budget_s", "width", "height")),
        side_timeout=args.side_timeout,
        budget_s=args.budget_s,
        tag="edit_latency",
    )
    model = "tiny smoke models" if args.tiny else "SD 1.5-size models"
    kind = "reward U-Net" if args.reward else "IP2P U-Net"
    title = (
        f"edit latency, {model} ({kind}, random weights), {args.width}x{args.height} px, {args.steps} "
        f"Euler-ancestral steps, IP2P guidance (3 branches), {args.dtype}, median of {args.iters}"
    )
    table, records = summarize(args, results)
    device = next((r["env"].get("device") for r in results if r.get("env")), "unknown")
    print(f"\n## {title}\ndevice: {device}; commit {common.git_commit()}\n")
    print(table)
    breakdown = common.breakdown_table(results)
    if breakdown:
        print("\n" + breakdown.replace("per step", "per edit"))
    gpu = any(common.is_gpu_device(r.get("env", {})) for r in results)
    if args.tiny or not gpu:
        print("(CPU smoke numbers: they show the benchmark runs, not performance)")
    common.write_results(args, argv, "edit_latency", title, records)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
