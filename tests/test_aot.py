"""``python -m rewardedit_jax.aot``: a config's train step compiled for a TPU slice on this CPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardedit_jax.training import analysis
from rewardedit_jax.training.topology import TopologyError, parse_topology

REPO = Path(__file__).resolve().parents[1]


def run_aot(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    return subprocess.run(
        [sys.executable, "-m", "rewardedit_jax.aot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@pytest.fixture(scope="module")
def tiny_stage2_on_v5e4(tmp_path_factory):
    """The tiny config's stage-2 (reward) step from latents, FSDP over a v5e-4 slice (4 chips)."""
    out = tmp_path_factory.mktemp("aot") / "report.json"
    proc = run_aot(
        "--config", str(REPO / "configs" / "test_tiny.py"), "--topology", "v5e-4", "--json", str(out),
        "--config.reward.enabled=True", "--config.data.latent_cache=shapes-only",
        "--config.mesh.data=1", "--config.mesh.fsdp=4",
    )  # fmt: skip
    return proc, json.loads(out.read_text()) if out.is_file() else None


def test_the_stage2_step_compiles_for_a_tpu_slice_and_fits(tiny_stage2_on_v5e4):
    proc, report = tiny_stage2_on_v5e4
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["devices"] == 4 and report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert report["batch_per_device"] == 2 and report["global_batch"] == 8
    assert report["fits"] is True
    memory = report["memory"]
    assert 0 < memory["total_bytes"] <= report["hbm_bytes"] == 16 * 1024**3
    assert memory["argument_bytes"] >= report["state_bytes"]  # the state is an argument of the step
    assert report["flops_per_device"] > 0 and report["model_flops_per_device"] > 0
    # The estimate divides the model FLOPs (counted before partitioning) by 40% of the chip's peak.
    step_s = report["model_flops_per_device"] / (197e12 * 0.4)
    assert report["estimate"]["step_s"] == pytest.approx(step_s, rel=1e-9)
    # FSDP: parameters are gathered for the forward pass and gradients reduce-scattered back.
    assert report["collectives"]["all-gather"]["count"] > 0
    assert report["collectives"]["all-gather"]["bytes"] > 0
    out = proc.stdout
    assert "v5e-4: 4 TPU v5 lite chips (v5e:2x2)" in out
    assert "mesh data=1 fsdp=4 tensor=1 over 4 devices; global batch 8, per device 2" in out
    assert ": fits (" in out and "TFLOP per step" in out and "estimate at 40% of 197 TFLOP/s" in out


def test_fsdp_divides_the_parameter_and_optimizer_bytes_per_chip(tiny_stage2_on_v5e4):
    _, report = tiny_stage2_on_v5e4
    sharded, full = report["state_parts_bytes"], report["state_parts_full_bytes"]
    for part in ("params", "opt_state", "ema"):
        # Norm scales, odd-sized and tiny leaves stay replicated: at most 20% over an even split.
        assert sharded[part] <= 1.2 * full[part] / 4, (part, sharded[part], full[part])
        assert sharded[part] < full[part] / 2


def test_a_state_that_cannot_fit_fails_fast_before_compiling():
    start = time.perf_counter()
    proc = run_aot(
        "--config", str(REPO / "configs" / "sd15_reward.py"), "--topology", "v5e-4",
        "--config.model.unet.layers_per_block=40", "--config.mesh.data=4",
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("does not fit: the train state alone needs "), last
    assert "more than the 16.00 GiB a device has, by " in last and "nothing was compiled" in last
    assert "lowering" not in proc.stderr  # refused from the abstract state, before any lowering
    assert elapsed < 120, elapsed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topology", "v9z-8"], "--topology 'v9z-8': expected GENERATION-COUNT"),
        (["--topology", "v5p-7"], "--topology v5p-7: v5p names count TensorCores, 2 per chip"),
        (["--topology", "v5e-16", "--num-slices", "0"], "--num-slices must be at least 1"),
        (["--topology", "v5e-4", "--config.mesh.fsdp=3"], "config.mesh: 4 devices are not divisible"),
    ],
)
def test_bad_input_is_one_line_with_status_2(args, message):
    proc = run_aot("--config", str(REPO / "configs" / "test_tiny.py"), *args, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last


def test_topology_names_follow_cloud_tpu_accelerator_types():
    assert parse_topology("v5e-16").topology_name == "v5e:4x4"
    assert parse_topology("v5e-8").chips_per_host_bounds == (2, 4, 1)  # one host of 8 chips
    assert parse_topology("v5p-8").topology_name == "v5:2x2x1"  # 8 TensorCores = 4 megacore chips
    assert parse_topology("v4-32").topology_name == "v4:2x2x4"
    assert parse_topology("v5p-128").topology_name == "v5:4x4x4" and parse_topology("v5p-128").wrap == (
        True,
        True,
        True,
    )
    assert parse_topology("v6e-8").num_chips == 8
    assert parse_topology("v5e-16", num_slices=2).num_chips == 32
    with pytest.raises(TopologyError, match="only power-of-two slices"):
        parse_topology("v5e-12")


def test_collective_traffic_reads_async_starts_and_fused_reduce_scatters():
    hlo = "\n".join(
        [
            "%all-reduce-scatter (input: f32[64,8]) -> f32[16,8] {",
            "  %all-reduce.2 = f32[64,8]{1,0:T(8,128)} all-reduce(%input), channel_id=4",
            "}",
            "ENTRY %main (p: bf16[16,8]) -> f32[] {",
            "  %ag = (bf16[16,8]{1,0}, bf16[64,8]{1,0}) all-gather-start(bf16[16,8]{1,0} %p), dimensions={0}",
            "  %agd = bf16[64,8]{1,0} all-gather-done(%ag)",
            "  %ar = (f32[10]{0}, f32[6]{0}) all-reduce(f32[10]{0} %a, f32[6]{0} %b), to_apply=%add",
            "}",
        ]
    )
    traffic = analysis.collective_traffic(hlo)
    assert traffic["reduce-scatter"] == {"count": 1, "bytes": 64 * 8 * 4}
    assert traffic["all-gather"] == {"count": 1, "bytes": 64 * 8 * 2}  # the done adds nothing
    assert traffic["all-reduce"] == {"count": 1, "bytes": (10 + 6) * 4}  # a combined all-reduce
