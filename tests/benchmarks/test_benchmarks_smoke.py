"""The GPU benchmarks run end to end in their tiny CPU mode and print both sides of the comparison.

``benchmarks/train_step.py`` and ``benchmarks/edit_latency.py`` run as subprocesses (as on the GPU
machine), each with our JAX side and the diffusers PyTorch eager side; torch.compile is skipped here (its
CPU compile takes minutes) but the same code path runs on the GPU.
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, tmp_path: Path, *flags: str) -> tuple[str, dict]:
    out = tmp_path / "result.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / script),
            "--tiny",
            "--skip-compile",
            "--json",
            str(out),
        ]
        + list(flags),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the first table printed (the results), without its header."""
    rows, lines = [], iter(stdout.splitlines())
    for line in lines:
        if line.startswith("| "):
            rows.append(line)
            rows += [line for line in iter(lambda: next(lines, ""), "") if line.startswith("|")]
            break
    rows = [line.strip("|").split("|") for line in rows if not line.startswith("|---")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def test_train_step_prints_ours_and_the_pytorch_eager_peer(tmp_path):
    stdout, payload = run_benchmark("train_step.py", tmp_path, "--profile", "1")
    rows = {row[0]: row for row in table_rows(stdout)}
    assert "rewardedit_jax (auto attention)" in rows and "diffusers eager" in rows, stdout
    for row in rows.values():
        assert float(row[1]) > 0 and float(row[2]) > 0, row  # images/s and step ms measured
    assert "CPU smoke" in stdout and "FLOP per step (XLA cost analysis" in stdout
    ours, eager = payload["results"]
    assert ours["side"] == "jax" and eager["side"] == "torch-eager"
    assert ours["params"] == eager["params"]  # the same reward U-Net on both sides
    assert ours["flops_per_step"] > 0 and ours["tflops"] > 0 and eager["tflops"] > 0
    assert ours["mfu"] is None  # MFU is a GPU number
    assert eager["ours_over_this"] > 0 and ours["ours_over_this"] == 1.0
    # --profile: each side's kernel time by category (XLA thunks and aten operators on CPU).
    assert "kernel time per step (ms)" in stdout and "top kernels, diffusers eager" in stdout, stdout
    for side in (ours, eager):
        profile = side["profile"]
        assert profile["device_ms_per_step"] > 0 and profile["launches_per_step"] > 0, profile
        assert sum(profile["categories_ms"].values()) == pytest.approx(profile["device_ms_per_step"])
    assert "convolution" in eager["profile"]["categories_ms"], eager["profile"]


def test_edit_latency_prints_ours_and_the_diffusers_pipeline(tmp_path):
    stdout, payload = run_benchmark("edit_latency.py", tmp_path, "--batch", "1", "--iters", "1")
    rows = table_rows(stdout)
    labels = [row[0] for row in rows]
    assert labels == [
        "rewardedit_jax EditSampler (auto attention)",
        "diffusers StableDiffusionInstructPix2PixPipeline (eager)",
    ], stdout
    assert all(row[1] == "1" and float(row[2]) > 0 for row in rows), rows
    ours, eager = payload["results"]
    assert ours["compile_count"] == 1  # one compiled sampler, reused by the timed edit
    assert eager["per_batch"][0]["ours_speedup"] > 0


def test_edit_latency_batches_non_square_sizes_profile_and_the_560_edit_estimate(tmp_path):
    stdout, payload = run_benchmark(
        "edit_latency.py", tmp_path, "--skip-torch", "--batch", "1", "2", "--size", "48x32", "--iters", "1",
        "--profile", "1", "--dtype", "fp32",
    )  # fmt: skip
    (ours,) = payload["results"]
    assert ours["compile_count"] == 2 and "48x32 px" in stdout, stdout
    one, two = ours["per_batch"]
    assert one["real_edit_560_s"] == pytest.approx(560 * one["median_s"])
    assert two["real_edit_560_s"] == pytest.approx(280 * two["median_s"])
    # The first example has the same image and seed at both batch sizes: in fp32 its edit is the same up to
    # rounding (in bf16 the tiny model's 7.5x text guidance amplifies batch-dependent rounding).
    assert "vs_first_batch" not in one and two["vs_first_batch"]["max_abs"] <= 1, two
    assert ours["profile"]["device_ms_per_step"] > 0 and "kernel time per edit (ms)" in stdout, stdout


def test_edit_latency_counts_the_flops_of_one_edit_by_component(tmp_path):
    stdout, payload = run_benchmark("edit_latency.py", tmp_path, "--cost-only", "--size", "48x32")
    cost = payload["cost"]
    assert set(cost["parts"]) == {"unet", "vae_encode", "vae_decode", "text_encoder"}, cost
    assert cost["parts"]["unet"] == pytest.approx(2 * cost["unet_step"]) and cost["unet_step"] > 0
    assert cost["total"] == pytest.approx(sum(cost["parts"].values())) and "one edit at 48x32 px" in stdout


def test_a_side_that_runs_out_of_time_keeps_its_partial_result(tmp_path):
    from benchmarks import common

    script = tmp_path / "side.py"
    script.write_text(
        "import json, sys, time\n"
        f"print({common.RESULT_PREFIX!r} + json.dumps({{'per_batch': [1]}}), flush=True)\n"
        "time.sleep(60)\n"
    )
    result = common.run_side(script, [], timeout=5)
    assert result["per_batch"] == [1] and "timed out" in result["error"], result
    script.write_text("import time; time.sleep(60)\n")
    assert common.run_side(script, [], timeout=2) == {"error": "timed out after 2 s"}


def test_train_step_levers_keep_the_loss_and_dump_what_the_gpu_profile_needs(tmp_path):
    """``--state-layout conv_ohwi`` lays the 4-D kernels out (O, H, W, I)-major and trains the same;
    ``--dump-dir`` writes the optimized HLO and keeps every profiled kernel with its HLO op."""
    losses, layouts = {}, {}
    for layout in ("default", "conv_ohwi"):
        dump = tmp_path / layout
        _, payload = run_benchmark(
            "train_step.py", tmp_path, "--skip-torch", "--state-layout", layout, "--profile", "1",
            "--dump-dir", str(dump), "--dump-tag", "t", "--model-flops", "0.001",
        )  # fmt: skip
        (ours,) = payload["results"]
        losses[layout], layouts[layout] = ours["loss"], ours.get("conv_kernel_layouts")
        text = gzip.open(dump / "hlo_t.txt.gz", "rt").read()
        assert "ENTRY" in text and ours["hlo_dump"]["chars"] == len(text)
        kernels = ours["profile"]["all_kernels"]
        assert len(kernels) == ours["profile"]["kernels"] and any(k[2] for k in kernels), kernels[:3]
        assert ours["flops_per_step"] > 0  # the lowering's count (CPU has a cost analysis)
    assert layouts["default"] is None
    # All 24 4-D kernels of the tiny reward U-Net (convolutions, 1x1 projections, reward modules).
    assert layouts["conv_ohwi"] == {"(3, 0, 1, 2)": 24}, layouts
    assert losses["conv_ohwi"] == pytest.approx(losses["default"], rel=1e-6), losses
