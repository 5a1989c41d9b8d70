"""Train-step throughput of the SD 1.5-size reward U-Net: rewardedit_jax against diffusers PyTorch.

One optimizer step from cached latents (``rewardedit_jax.training.step``: posterior sample of the edited
latent, noise, timestep, CFG dropout, U-Net forward and backward, MSE, global-norm clip, AdamW; no VAE or
text encoder, random weights), at 256 px batch 64 or 512 px batch 16, against the same step written the
diffusers way on ``rewardedit_jax.torch_compat.RewardUNet2DConditionModel`` (bf16 autocast, SDPA attention,
fused AdamW, ``clip_grad_norm_``), eager and under ``torch.compile``, in the same run. Each side runs in
its own subprocess (see ``common.py``). Prints images/s, step time (median of ``--steps``), TFLOP/s and
MFU against 989 TFLOP/s from XLA's cost analysis of our compiled step, peak device memory, and our
throughput over each peer's.

    python benchmarks/train_step.py --tiny --skip-compile                 # CPU smoke, ~20 s
    python benchmarks/train_step.py --resolution 256 --batch 64           # H100: the shape of PEER
    python benchmarks/train_step.py --resolution 512 --batch 16 --json r.json
    python benchmarks/train_step.py --cost-only --batch 1                 # FLOPs/memory from abstract shapes

``--cost-only`` compiles our step from abstract shapes (no weights, no data) and prints XLA's FLOP count
and memory analysis: the CPU-side cost analysis of ``benchmarks/NOTES.md``. ``benchmarks/run_gpu.sh``
runs the GPU protocol.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TEXT_LENGTH = 77
LATENT_CHANNELS = 4
VAE_FACTOR = 8
# Peer numbers (docs/sources.md, "Peer performance numbers"; H100, torch 2.11, diffusers 0.42.1): 256 px
# images/s, for context only.
PEER = {
    (256, 64): {"torch eager": 328.0, "torch.compile": 476.0},
    (256, 32): {"torch eager": 212.0},
}
SIDES = ("jax", "torch-eager", "torch-compile")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke: tiny U-Net, 64 px, batch 2, 2 steps")
    p.add_argument("--batch", type=int, help="global batch (default 64, tiny 2)")
    p.add_argument(
        "--resolution", type=int, help="image side in pixels; latents are 1/8 (default 256, tiny 64)"
    )
    p.add_argument("--steps", type=int, help="timed steps; the median is reported (default 10, tiny 2)")
    p.add_argument("--warmup", type=int, help="untimed steps after compilation (default 3, tiny 1)")
    p.add_argument("--attention", choices=("xla", "cudnn", "auto", "auto_padded"), default="auto")
    p.add_argument(
        "--group-norm", choices=("flax", "channel_sums"), default="flax",
        help="how GroupNorm computes its statistics (rewardedit_jax.models.layers.group_norm_implementation)",
    )  # fmt: skip
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="activations (params fp32)")
    p.add_argument(
        "--state-layout", choices=("auto", "default", "conv_ohwi", "xla_auto"), default="auto",
        help="device layout of the train state (params, Adam moments): as the trainer's config.state_layout "
        "(auto: conv_ohwi on GPUs, row-major elsewhere; default: row-major; conv_ohwi: 4-D kernels "
        "(O, H, W, I)-major, cuDNN's filter layout), or chosen by XLA (xla_auto)",
    )  # fmt: skip
    p.add_argument("--no-reward", action="store_true", help="the stock IP2P U-Net (no reward modules)")
    p.add_argument("--ema", action="store_true", help="also update an EMA copy of the weights (both sides)")
    p.add_argument("--remat", action="store_true", help="rematerialize each U-Net block (ours; nnx.remat)")
    p.add_argument("--skip-jax", action="store_true")
    p.add_argument("--skip-torch", action="store_true", help="no PyTorch peer at all")
    p.add_argument("--skip-compile", action="store_true", help="no torch.compile peer (eager only)")
    p.add_argument("--skip-eager", action="store_true", help="no eager PyTorch peer (torch.compile only)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune...)")
    p.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="after timing, profile N more steps per side and print device time by kernel category",
    )  # fmt: skip
    p.add_argument("--cost-only", action="store_true", help="ours only: compile from abstract shapes, no run")
    p.add_argument("--lower-only", action="store_true", help="with --cost-only: FLOPs of the lowering only")
    p.add_argument("--cache-dir", help="JAX persistent compilation cache directory")
    p.add_argument(
        "--dump-dir",
        help="ours: write the optimized HLO (hlo_<tag>.txt.gz) here, and keep every profiled kernel with its "
        "HLO op in the JSON, to map slow kernels back to the graph",
    )
    p.add_argument("--dump-tag", default="train", help="file-name tag of --dump-dir's files")
    p.add_argument(
        "--model-flops", type=float, metavar="TFLOP",
        help="model TFLOP per step when already known (skips the CPU lowering that counts them on GPUs)",
    )  # fmt: skip
    p.add_argument("--side-timeout", type=float, help="seconds per side subprocess")
    p.add_argument("--budget-s", type=float, help="seconds for all sides together (later sides are skipped)")
    p.add_argument("--json", help="write the results here (machine-readable)")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    args = p.parse_args(argv)
    defaults = dict(batch=2, resolution=64, steps=2, warmup=1) if args.tiny else {}
    defaults = {**dict(batch=64, resolution=256, steps=10, warmup=3), **defaults}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.resolution % VAE_FACTOR:
        p.error(f"--resolution must be a multiple of {VAE_FACTOR}")
    return args


def unet_config(args) -> dict:
    if args.tiny:
        return dict(common.TINY_UNET)
    from rewardedit_jax.configs.sd15 import SD15_UNET

    return dict(SD15_UNET)


def text_dim(config: dict) -> int:
    cross = config["cross_attention_dim"]
    return int(cross if isinstance(cross, int) else cross[0])


# --- our side -------------------------------------------------------------------------------------------


def train_config(args):
    """The training config the benchmark's step is built from (``rewardedit_jax.training.builder``, as the
    trainer builds it): the default config's official optimizer, CFG dropout and EMA, latent batches."""
    from rewardedit_jax.configs import default
    from rewardedit_jax.configs.sd15 import SD15_VAE

    config = default.get_config()
    config.batch_size = args.batch
    config.data.resolution = args.resolution
    config.data.latent_cache = "benchmark"  # latent batches: no VAE or text encoder in the step
    config.model.unet = unet_config(args)
    config.model.vae = dict(SD15_VAE)  # its scaling factor and downsampling (8) shape the latents
    config.reward.enabled = not args.no_reward
    config.ema.enabled = args.ema
    config.compute_dtype = "bfloat16" if args.dtype == "bf16" else "float32"
    config.remat = "blocks" if args.remat else "none"
    config.attention = args.attention
    if args.state_layout != "xla_auto":  # xla_auto is a benchmark-only layout, passed to the builder
        config.state_layout = args.state_layout
    config.mesh.data = 1
    return config


def _command_buffer_note() -> str:
    """``, command buffers X`` when XLA_FLAGS sets which commands XLA records into CUDA graphs."""
    import os
    import re

    match = re.search(r"--xla_gpu_enable_command_buffer=(\S*)", os.environ.get("XLA_FLAGS", ""))
    return f", command buffers {match.group(1) or 'off'}" if match else ""


def run_jax(args) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from rewardedit_jax.models.layers import count_params, fill_random_, group_norm_implementation
    from rewardedit_jax.schedule import NoiseSchedule
    from rewardedit_jax.training import analysis, builder
    from rewardedit_jax.training import sharding as shard_lib

    common.enable_jax_compilation_cache(args.cache_dir)
    config = train_config(args)
    mesh = shard_lib.make_mesh(dict(config.mesh), jax.devices()[:1])
    layout = args.state_layout if args.state_layout == "xla_auto" else None
    components = builder.abstract_components(config, encoders=False)
    unet = components.unet
    n_params = count_params(unet)

    def build(config, layout):
        return builder.build_train_step(
            config, mesh, components, schedule=NoiseSchedule.sd15(), latent=True, layout=layout
        )

    # Model FLOPs (the MFU numerator): the portable graph (xla attention, no remat, row-major state) before
    # optimization. Fused attention kernels are custom calls whose FLOPs XLA does not count; remat adds
    # recomputation.
    t0 = time.perf_counter()
    portable = config.copy_and_resolve_references()
    portable.attention, portable.remat, portable.state_layout = "xla", "none", "default"
    model_lowered = build(portable, None).lower()
    step = build(config, layout)
    with group_norm_implementation(args.group_norm):
        lowered = step.lower()
    lower_s = time.perf_counter() - t0
    flops_model = analysis.cost_flops(model_lowered)
    result = {
        "side": "jax",
        "label": f"rewardedit_jax ({args.attention} attention{', remat' if args.remat else ''}"
        f"{', GroupNorm ' + args.group_norm if args.group_norm != 'flax' else ''}"
        f"{', state layout ' + step.layout if step.layout != 'default' else ''}"
        f"{_command_buffer_note()})",
        "params": n_params,
        "lower_s": lower_s,
        "flops_per_step": flops_model,
        "flops_per_step_lowered": analysis.cost_flops(lowered),
        "env": common.jax_environment(),
    }
    if args.cost_only and args.lower_only:
        return result
    t0 = time.perf_counter()
    compiled = lowered.compile(common.TINY_COMPILER_OPTIONS if args.tiny else None)
    compile_s = time.perf_counter() - t0
    result["compile_s"] = compile_s
    result["flops_per_step_compiled"] = analysis.cost_flops(compiled)
    result["compiled_memory"] = analysis.compiled_memory(compiled)
    if args.dump_dir:
        result["hlo_dump"] = common.write_gzip_text(
            Path(args.dump_dir) / f"hlo_{args.dump_tag}.txt.gz", compiled.as_text()
        )
    if args.cost_only:
        return result

    fill_random_(unet, seed=0)
    unet_rngs = nnx.split(unet, nnx.Param, ...)[2]
    state = step.init_state(nnx.state(unet, nnx.Param), seed=0)
    rng = np.random.default_rng(0)
    batch = {}
    for name, spec in step.batch.items():
        if name == "reward_scores":
            value = rng.uniform(0.0, 5.0, spec.shape)
        elif name == "edited_latent_logvar":
            value = rng.uniform(-6.0, -2.0, spec.shape)
        else:
            value = rng.standard_normal(spec.shape)
        batch[name] = value.astype(np.float32)
    batch = step.place_batch(batch)
    empty = rng.standard_normal(step.frozen["empty_embeds"].shape).astype(np.float32)
    frozen = step.place_frozen({"empty_embeds": empty, "unet_rngs": unet_rngs})
    if step.layout != "default":
        # Lay the state out as the executable expects (what XLA chose for xla_auto), and record the
        # layouts of the 4-D kernels.
        old, state = state, jax.device_put(state, compiled.input_formats[0][0])
        for old_leaf, new_leaf in zip(jax.tree.leaves(old), jax.tree.leaves(state)):
            if old_leaf is not new_leaf:
                old_leaf.delete()  # no second copy of the weights (the U-Net module still refers to them)
        del old
        chosen: dict[str, int] = {}
        for x in jax.tree.leaves(state["params"]):
            if x.ndim == 4:
                key = str(tuple(x.format.layout.major_to_minor))
                chosen[key] = chosen.get(key, 0) + 1
        result["conv_kernel_layouts"] = chosen
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch, frozen)
        return metrics["loss"]

    timing = common.time_calls(one_step, jax.block_until_ready, warmup=args.warmup, iters=args.steps)
    loss = float(one_step())
    result.update(timing)
    result["loss"] = loss
    if args.profile:
        result["profile"] = common.profile_or_error(
            lambda: common.kernel_breakdown(
                common.jax_kernel_events(lambda: jax.block_until_ready(one_step()), args.profile),
                args.profile,
                keep_all=bool(args.dump_dir),
            )
        )
    result["peak_memory_bytes"] = common.jax_peak_memory_bytes()
    return result


# --- the PyTorch peer -------------------------------------------------------------------------------------


def run_torch(args, compile_model: bool) -> dict:
    import diffusers
    import torch
    import torch.nn.functional as F

    from rewardedit_jax.schedule import NoiseSchedule
    from rewardedit_jax.torch_compat import RewardUNet2DConditionModel

    reward = not args.no_reward
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = unet_config(args)
    train = train_config(args)  # the official optimizer, CFG dropout and EMA, as our side
    cfg_dropout, ema_decay = train.cfg_dropout_prob, train.ema.max_decay
    scaling_factor = train.model.vae.scaling_factor
    torch.manual_seed(0)
    cls = RewardUNet2DConditionModel if reward else diffusers.UNet2DConditionModel
    with torch.device(device):
        unet = cls(**config)
    unet.train()
    n_params = sum(p.numel() for p in unet.parameters())
    params = [p for p in unet.parameters() if p.requires_grad]
    o = train
    try:
        opt = torch.optim.AdamW(
            params, lr=o.learning_rate, betas=(o.adam_b1, o.adam_b2), eps=o.adam_eps,
            weight_decay=o.weight_decay, fused=True,
        )  # fmt: skip
        fused = True
    except (RuntimeError, TypeError):  # fused AdamW is unsupported on this device
        opt = torch.optim.AdamW(
            params, lr=o.learning_rate, betas=(o.adam_b1, o.adam_b2), eps=o.adam_eps,
            weight_decay=o.weight_decay, foreach=True,
        )  # fmt: skip
        fused = False
    ema = [p.detach().clone() for p in params] if args.ema else None
    model = torch.compile(unet, mode=args.compile_mode) if compile_model else unet

    schedule = NoiseSchedule.sd15()
    acp = torch.tensor(schedule.alphas_cumprod, dtype=torch.float32, device=device)
    b, side, d = args.batch, args.resolution // VAE_FACTOR, text_dim(config)
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

    latent = (b, LATENT_CHANNELS, side, side)  # NCHW
    source, mean = randn(*latent), randn(*latent)
    logvar = torch.rand(latent, generator=gen, device=device) * 4.0 - 6.0
    text = randn(b, TEXT_LENGTH, d)
    empty = randn(1, TEXT_LENGTH, d)
    added = None
    if reward:
        scores = torch.rand((b, 3), generator=gen, device=device) * 5.0
        added = {"reward_scores": scores, "negative_embeds": randn(b, d)}
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    step_count = [0]

    def one_step():
        with torch.no_grad():
            edited = (mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)) * scaling_factor
            noise = torch.randn_like(edited)
            t = torch.randint(0, schedule.num_train_timesteps, (b,), device=device)
            a = acp[t].view(b, 1, 1, 1)
            noisy = a.sqrt() * edited + (1 - a).sqrt() * noise
            u = torch.rand((b,), device=device)
            context = torch.where((u < 2 * cfg_dropout).view(b, 1, 1), empty, text)
            keep = ~((u >= cfg_dropout) & (u < 3 * cfg_dropout))
            cond = source * keep.view(b, 1, 1, 1)
        with autocast:
            kwargs = {"added_cond_kwargs": added} if reward else {}
            pred = model(torch.cat([noisy, cond], dim=1), t, context, **kwargs).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip_norm, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            s = step_count[0]
            decay = min(ema_decay, (1 + s) / (10 + s))
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - decay)
        step_count[0] += 1
        return loss

    def sync(loss):
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    timing = common.time_calls(one_step, sync, warmup=args.warmup, iters=args.steps)
    profile = None
    if args.profile:
        profile = common.profile_or_error(
            lambda: common.kernel_breakdown(
                common.torch_kernel_events(lambda: sync(one_step()), args.profile), args.profile
            )
        )
    result = {
        "profile": profile,
        "side": "torch-compile" if compile_model else "torch-eager",
        "label": f"diffusers {'torch.compile' if compile_model else 'eager'}",
        "params": n_params,
        "fused_adamw": fused,
        "loss": sync(one_step()),
        "env": common.torch_environment(),
        **timing,
    }
    if compile_model:
        result["compile_s"] = timing["first_s"]  # the first step compiles forward and backward
    result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated()) if device == "cuda" else None
    return result


# --- the run ------------------------------------------------------------------------------------------------


def describe(args, params: int | None) -> str:
    size = "tiny smoke U-Net" if args.tiny else "SD 1.5-size U-Net"
    kind = "IP2P" if args.no_reward else "reward"
    n = f", {params / 1e6:.1f}M params" if params else ""
    side = args.resolution // VAE_FACTOR
    return (
        f"train step, {size} ({kind}{n}), {args.resolution} px ({side}x{side} latents), batch {args.batch}, "
        f"{args.dtype}, median of {args.steps} steps"
    )


def _note(result: dict) -> str:
    if result.get("side") == "jax":
        return "compile s: XLA compile of the step"
    adam = "fused AdamW" if result.get("fused_adamw") else "foreach AdamW"
    return adam + ("; compile s: first step" if result.get("side") == "torch-compile" else "")


def summarize(args, results: list[dict]) -> tuple[str, list[dict]]:
    jax_result = next((r for r in results if r.get("side") == "jax"), {})
    ours = jax_result if "median_s" in jax_result else None
    flops = jax_result.get("flops_per_step")
    gpu = any(common.is_gpu_device(r.get("env", {})) for r in results)
    rows, records = [], []
    for r in results:
        rec = {"side": r.get("side"), "label": r.get("label", r.get("side"))}
        if "median_s" not in r:
            note = r.get("error", "cost only: compiled, not run")
            rows.append([rec["label"], *(["n/a"] * 5), common.fmt(r.get("compile_s"), ".1f"), "n/a", note])
            records.append({**r, **rec})
            continue
        step_s = r["median_s"]
        rec["images_per_s"] = args.batch / step_s
        rec["step_ms"] = step_s * 1e3
        rec["tflops"] = flops / step_s / 1e12 if flops else None
        rec["mfu"] = rec["tflops"] / common.H100_BF16_DENSE_TFLOPS if (gpu and rec["tflops"]) else None
        rec["ours_over_this"] = (ours["median_s"] and step_s / ours["median_s"]) if ours else None
        records.append({**r, **rec})
        rows.append(
            [
                rec["label"],
                common.fmt(rec["images_per_s"], ".1f"),
                common.fmt(rec["step_ms"], ".1f"),
                common.fmt(rec["tflops"], ".3g" if not gpu else ".0f"),
                common.fmt(rec["mfu"] and 100 * rec["mfu"], ".1f", "%"),
                common.fmt_bytes(r.get("peak_memory_bytes")),
                common.fmt(r.get("compile_s"), ".1f"),
                common.fmt(rec["ours_over_this"], ".2f", "x"),
                _note(r),
            ]
        )
    header = [
        "side", "images/s", "step ms", "TFLOP/s", "MFU", "peak memory", "compile s", "ours / this", "note",
    ]  # fmt: skip
    lines = [common.markdown_table(header, rows)]
    if flops:
        lines.append(
            f"FLOP per step (XLA cost analysis, xla-attention graph): {flops / 1e12:.4g} T = "
            f"{flops / args.batch / 1e12:.4g} TFLOP per image (peer numbers: 0.54 at 256 px, 2.41 at 512 px)"
        )
    peer = PEER.get((args.resolution, args.batch)) if (gpu and not args.tiny) else None
    if peer and ours:
        mine = args.batch / ours["median_s"]
        lines.append(
            "vs docs/sources.md peers (H100, torch 2.11, another run): "
            + ", ".join(f"{k} {v:.0f} img/s -> ours {mine / v:.2f}x" for k, v in peer.items())
        )
    return "\n".join(lines), records


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "jax":
        common.emit_result(run_jax(args))
        return 0
    if args.side in ("torch-eager", "torch-compile"):
        common.emit_result(run_torch(args, compile_model=args.side == "torch-compile"))
        return 0

    sides = [] if args.skip_jax else ["jax"]
    if not (args.skip_torch or args.cost_only):
        sides += common.peer_sides(args)
    results = common.run_sides(
        Path(__file__).resolve(),
        sides,
        common.side_argv(args),
        side_timeout=args.side_timeout,
        budget_s=args.budget_s,
        tag="train_step",
    )
    ours = next((r for r in results if r.get("side") == "jax" and "error" not in r), None)
    if ours is not None and ours.get("flops_per_step") is None and args.model_flops:
        ours["flops_per_step"] = args.model_flops * 1e12
        ours["flops_source"] = "--model-flops"
    if ours is not None and ours.get("flops_per_step") is None:
        # The GPU plugin (PJRT C API) has no cost analysis of a lowering: count the same graph on CPU.
        cpu = common.run_side(
            Path(__file__).resolve(),
            ["--side", "jax", *common.side_argv(args), "--cost-only", "--lower-only", "--attention", "xla"],
            timeout=600,
            env={"JAX_PLATFORMS": "cpu"},
        )
        ours["flops_per_step"] = cpu.get("flops_per_step")
        ours["flops_source"] = (
            "CPU lowering of the same graph" if ours["flops_per_step"] else cpu.get("error")
        )
    params = next((r["params"] for r in results if r.get("params")), None)
    title = describe(args, params)
    table, records = summarize(args, results)
    envs = {r["side"]: r.get("env") for r in results if r.get("env")}
    device = next((e.get("device") for e in envs.values()), "unknown")
    print(f"\n## {title}\ndevice: {device}; commit {common.git_commit()}\n")
    print(table)
    for r in results:
        if r.get("side") == "jax" and r.get("compiled_memory"):
            m = r["compiled_memory"]
            print(
                f"XLA memory analysis (ours): arguments {common.fmt_bytes(m['argument_bytes'])}, "
                f"temporaries {common.fmt_bytes(m['temp_bytes'])}, "
                f"outputs {common.fmt_bytes(m['output_bytes'])} "
                f"(aliased {common.fmt_bytes(m['alias_bytes'])}); lower {r['lower_s']:.1f} s"
            )
    breakdown = common.breakdown_table(results)
    if breakdown:
        print("\n" + breakdown)
    if args.tiny or not any(common.is_gpu_device(e) for e in envs.values()):
        print("(CPU smoke numbers: they show the benchmark runs, not performance)")
    common.write_results(args, argv, "train_step", title, records)
    ok = all("error" not in r for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
