"""Shared helpers of the GPU benchmarks (``train_step.py``, ``edit_latency.py``): timing, one side per
subprocess, peak memory, environment facts and the printed table.

Each benchmark measures *our* JAX side and the *diffusers PyTorch* peer in one run (one command, one
machine), but every side runs in its own subprocess: JAX preallocates most of the GPU memory and both
frameworks keep their allocator pools, so sharing a process would starve the second side and blur the
peak-memory numbers. A side prints one ``RESULT {json}`` line; the parent collects them and prints the
table.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `configs` and `rewardedit_jax` from a plain checkout
    sys.path.insert(0, str(REPO_ROOT))

from rewardedit_jax.configs.components import unet_config  # noqa: E402

# The tiny smoke U-Net of both benchmarks: one level of 32 channels (GroupNorm(32) for the reward modules),
# text width 32, InstructPix2Pix's 8 input channels.
TINY_UNET = unet_config(
    [32], [True], cross_attention_dim=32, attention_head_dim=4, act_fn="silu", in_channels=8, out_channels=4
)
# H100 SXM dense bf16 matrix peak (datasheet), the denominator of MFU
# (docs/sources.md, "Peer performance numbers").
H100_BF16_DENSE_TFLOPS = 989.0
RESULT_PREFIX = "RESULT "
# CPU smoke runs: compile time dominates tiny models, and the unoptimized backend halves it.
TINY_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# --- timing -------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int, iters: int) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times timed; ``sync(out)`` waits for the device.

    Returns ``{"first_s", "times_s", "median_s"}``; ``first_s`` is the first warm-up call (it includes any
    lazy compilation, e.g. torch.compile), or the first timed call when ``warmup`` is 0.
    """
    first = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        sync(fn())
        if first is None:
            first = time.perf_counter() - t0
    times = []
    for _ in range(max(iters, 1)):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return {
        "first_s": times[0] if first is None else first,
        "times_s": times,
        "median_s": statistics.median(times),
    }


# --- kernel-time breakdown (--profile) ------------------------------------------------------------------

# Kernel-name fragments (lower case) -> category, first match wins. XLA names its GPU kernels after the
# fusion ("loop_add_fusion", "input_reduce_fusion"), cuDNN and cuBLAS after the algorithm, Inductor after
# the kind of kernel ("triton_poi_" pointwise, "triton_red_"/"triton_per_" reductions).
KERNEL_CATEGORIES = (
    ("attention", ("fmha", "flash", "sdpa", "attention", "softmax")),
    (
        "convolution",
        ("convolution", "cudnn-conv", "conv2d", "fprop", "dgrad", "wgrad", "implicit_gemm", "xmma_", "cudnn"),
    ),
    ("matmul", ("gemm", "nvjet", "cutlass", "matmul", "dot", "aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("copy/transpose", ("copy", "transpose", "memcpy", "memset", "concatenate", "pad")),
    ("reduction/norm", ("reduce", "norm", "triton_red", "triton_per", "mean", "var")),
    ("elementwise", ("loop_", "triton_poi", "elementwise", "vectorized", "fusion", "aten::")),
)


def kernel_category(name: str) -> str:
    lower = name.lower()
    for category, fragments in KERNEL_CATEGORIES:
        if any(f in lower for f in fragments):
            return category
    return "other"


def kernel_breakdown(events: Sequence[tuple], steps: int, *, top: int = 12, keep_all: bool = False) -> dict:
    """Device time per step by category and the ``top`` kernels, from ``(kernel name, seconds)`` or
    ``(kernel name, seconds, hlo op)`` events of ``steps`` profiled steps. ``keep_all`` also returns
    every kernel (name, HLO ops, launches and ms per step), slowest first."""
    by_name: dict[str, float] = {}
    ops: dict[str, set] = {}
    launches: dict[str, int] = {}
    for name, seconds, *op in events:
        by_name[name] = by_name.get(name, 0.0) + seconds
        launches[name] = launches.get(name, 0) + 1
        if op and op[0]:
            ops.setdefault(name, set()).add(str(op[0]))
    total = sum(by_name.values())
    categories: dict[str, float] = {}
    for name, seconds in by_name.items():
        category = kernel_category(name)
        categories[category] = categories.get(category, 0.0) + seconds
    per_step = lambda seconds: 1e3 * seconds / max(steps, 1)  # noqa: E731
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    result = {
        "steps": steps,
        "kernels": len(by_name),
        "launches_per_step": len(events) / max(steps, 1),
        "device_ms_per_step": per_step(total),
        "categories_ms": {k: per_step(v) for k, v in sorted(categories.items(), key=lambda kv: -kv[1])},
        "top_ms": [[name[:90], kernel_category(name), per_step(v)] for name, v in ranked],
    }
    if keep_all:
        result["all_kernels"] = [
            [name, kernel_category(name), sorted(ops.get(name, ()))[:20], launches[name] / max(steps, 1),
             per_step(v)]
            for name, v in sorted(by_name.items(), key=lambda kv: -kv[1])
        ]  # fmt: skip
    return result


def jax_kernel_events(fn: Callable[[], Any], steps: int) -> list[tuple[str, float, str | None]]:
    """Run ``fn`` (which waits for its result) ``steps`` times under ``jax.profiler`` and return the
    executed kernels as ``(name, seconds, hlo op)``: the GPU planes' events, or on CPU the XLA thunks
    (events with an ``hlo_op``)."""
    import glob
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        try:
            for _ in range(steps):
                fn()
        finally:
            jax.profiler.stop_trace()
        files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        if not files:
            return []
        data = jax.profiler.ProfileData.from_file(files[0])
        gpu = [plane for plane in data.planes if plane.name.startswith("/device:GPU")]
        events = []
        for plane in gpu or [plane for plane in data.planes if plane.name == "/host:CPU"]:
            lines = list(plane.lines)
            # Raw GPU traces hold one line per CUDA stream; processed device planes hold "XLA Ops" (and
            # "Async XLA Ops") beside summaries that repeat the same time ("XLA Modules", "Steps").
            streams = [line for line in lines if line.name.startswith("Stream")]
            ops = [line for line in lines if line.name in ("XLA Ops", "Async XLA Ops")]
            summaries = ("XLA Modules", "Steps", "Launch Stats", "Framework", "Source", "TraceMe")
            chosen = streams or ops or [line for line in lines if not line.name.startswith(summaries)]
            print(
                f"[profile] {plane.name}: lines {[line.name for line in lines]}; "
                f"counted {[line.name for line in chosen]}",
                file=sys.stderr,
            )
            for line in chosen:
                for event in line.events:
                    stats = dict(event.stats)
                    if not gpu and "hlo_op" not in stats:
                        continue
                    events.append((event.name, event.duration_ns * 1e-9, stats.get("hlo_op")))
        return events


def torch_kernel_events(fn: Callable[[], Any], steps: int) -> list[tuple[str, float]]:
    """Run ``fn`` ``steps`` times under ``torch.profiler``: CUDA kernels, or on CPU the aten operators
    (self time, so nested operators are not counted twice)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
    events = []
    for event in prof.events():
        if cuda:
            if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
                events.append((event.name, event.time_range.elapsed_us() * 1e-6))
        elif event.name.startswith("aten::"):
            events.append((event.name, event.self_cpu_time_total * 1e-6))
    return events


def profile_or_error(profile: Callable[[], dict]) -> dict:
    """``profile()``, or ``{"error": ...}``: a profiler that fails must not lose the side's timing."""
    try:
        return profile()
    except Exception as e:  # the profiler's own failures vary by backend and version
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def breakdown_table(results: Sequence[dict]) -> str | None:
    """Per-side device ms per step by kernel category (sides that were profiled), then each side's top
    kernels."""
    failed = [f"profile of {r.get('side')} failed: {r['profile']['error']}" for r in results
              if r.get("profile") and "error" in r["profile"]]  # fmt: skip
    profiled = [r for r in results if r.get("profile") and "error" not in r["profile"]]
    if not profiled:
        return "\n".join(failed) or None
    categories: list[str] = []
    for r in profiled:
        categories += [c for c in r["profile"]["categories_ms"] if c not in categories]
    header = ["kernel time per step (ms)", *(r.get("label", r.get("side")) for r in profiled)]
    rows = [[c, *(fmt(r["profile"]["categories_ms"].get(c), ".1f") for r in profiled)] for c in categories]
    rows.append(
        ["**total device time**", *(fmt(r["profile"]["device_ms_per_step"], ".1f") for r in profiled)]
    )
    rows.append(
        ["kernel launches per step", *(fmt(r["profile"]["launches_per_step"], ".0f") for r in profiled)]
    )
    lines = [markdown_table(header, rows)]
    for r in profiled:
        lines.append(f"\ntop kernels, {r.get('label', r.get('side'))} (ms per step):")
        lines.append(
            markdown_table(
                ["kernel", "category", "ms"], [[n, c, f"{ms:.2f}"] for n, c, ms in r["profile"]["top_ms"]]
            )
        )
    return "\n".join(lines + failed)


# --- memory ---------------------------------------------------------------------------------------------


def jax_peak_memory_bytes() -> int | None:
    """Peak bytes in use on the first JAX device since the process started (None where not reported)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


# --- environment --------------------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD's short hash, with ``+dirty`` when the tree has uncommitted changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def jax_environment() -> dict:
    import flax
    import jax

    device = jax.devices()[0]
    env = {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        import jaxlib

        env["jaxlib"] = jaxlib.__version__
    except Exception:
        pass
    return env


def torch_environment() -> dict:
    import diffusers
    import torch

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda}
    env["device"] = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    )
    env["backend"] = "gpu" if torch.cuda.is_available() else "cpu"
    return env


def is_gpu_device(env: dict) -> bool:
    return env.get("backend") in ("gpu", "cuda")


# --- one side per subprocess ------------------------------------------------------------------------------


def emit_result(result: dict) -> None:
    """Print a side's result as the one line the parent parses."""
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)


def run_side(
    script: Path, argv: Sequence[str], *, timeout: float | None = None, env: dict | None = None
) -> dict:
    """Run ``python script *argv`` and return its ``RESULT`` dict, or ``{"error": ...}``.

    The side's stderr (logs, compile messages) passes through; its stdout is read for the result line.
    """
    cmd = [sys.executable, str(script), *argv]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired as e:
        # A side may emit partial results as it goes (one line per finished part): keep the last one.
        partial = _last_result(e.stdout or "")
        error = f"timed out after {timeout:.0f} s"
        return {**partial, "error": error + " (partial result)"} if partial else {"error": error}
    wall = time.perf_counter() - t0
    result = _last_result(proc.stdout)
    if result:
        result.setdefault("process_wall_s", wall)
        return result
    tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
    return {"error": f"exit code {proc.returncode}, no result line ({tail[-300:]})"}


def _last_result(stdout: str | bytes) -> dict | None:
    if isinstance(stdout, bytes):
        stdout = stdout.decode(errors="replace")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def run_sides(
    script: Path,
    sides: Sequence[str],
    argv: Sequence[str],
    *,
    side_timeout: float | None = None,
    budget_s: float | None = None,
    tag: str = "benchmark",
) -> list[dict]:
    """Run each side in turn (``--side NAME`` + ``argv``); a side gets at most ``side_timeout`` seconds and
    what is left of ``budget_s`` for the whole run (a side with nothing left is reported, not run)."""
    start, results = time.perf_counter(), []
    for side in sides:
        timeout = side_timeout
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - start)
            if left < 5:
                results.append({"side": side, "error": f"skipped: the {budget_s:.0f} s budget is spent"})
                continue
            timeout = left if timeout is None else min(timeout, left)
        print(f"[{tag}] running side {side} ...", file=sys.stderr, flush=True)
        result = run_side(script, ["--side", side, *argv], timeout=timeout)
        result.setdefault("side", side)
        results.append(result)
    return results


# --- output ---------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{suffix}"


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e9:.1f} GB" if value >= 1e9 else f"{value / 1e6:.1f} MB"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_gzip_text(path: str | os.PathLike, text: str) -> dict:
    """Write ``text`` gzip-compressed to ``path`` (through a temporary name); its path and sizes."""
    import gzip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return {"path": str(path), "chars": len(text), "bytes": path.stat().st_size}


def peer_sides(args) -> list[str]:
    """The PyTorch peer's sides that ``args`` asks for (``--skip-compile``, ``--skip-eager``)."""
    # torch.compile first: it is the peer the targets are set against; eager is context.
    return [
        side
        for side, skip in (("torch-compile", args.skip_compile), ("torch-eager", args.skip_eager))
        if not skip
    ]


def write_results(args, argv: Sequence[str] | None, benchmark: str, title: str, records: list[dict]) -> None:
    """``--json``: the benchmark, its title, the command that ran it, the commit, the options, the results."""
    write_json(
        args.json,
        {
            "benchmark": benchmark,
            "title": title,
            "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
            "commit": git_commit(),
            "config": {k: v for k, v in vars(args).items() if k not in ("side", "json")},
            "results": records,
        },
    )


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def side_argv(args, exclude: Sequence[str] = ("side", "json", "side_timeout", "budget_s")) -> list[str]:
    """The parent's parsed options as command-line flags for a side subprocess."""
    argv = []
    for key, value in sorted(vars(args).items()):
        if key in exclude or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def enable_jax_compilation_cache(cache_dir: str | None) -> None:
    """The persistent compilation cache (a second run of the same shapes skips XLA compilation)."""
    if not cache_dir:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
