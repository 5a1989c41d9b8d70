"""Helpers for the training tests: the tiny config, running the CLI, reading metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tokenizer: Path, data_dir: Path, **overrides):
    from configs import test_tiny

    config = test_tiny.get_config()
    config.model.tokenizer = str(tokenizer)
    config.data.data_dir = str(data_dir)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli_args(config_overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in config_overrides.items()]


def run_cli(workdir: Path, overrides: dict, *, env=None, timeout=600) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "rewardedit_jax.train",
        "--config",
        str(REPO / "configs" / "test_tiny.py"),
        "--workdir",
        str(workdir),
        *cli_args(overrides),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["learning/loss"] for r in rows if "learning/loss" in r}  # not the eval/* rows


def wait_for_step(workdir: Path, step: int, proc, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    path = Path(workdir) / "metrics.jsonl"
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()[-2000:]}")
        if path.is_file() and any(json.loads(line)["step"] >= step for line in path.read_text().splitlines()):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout}s")


# One persistent XLA compilation cache for every training subprocess of a test session: runs that compile
# the same step (same config and device count) reuse it instead of compiling again.
_COMPILATION_CACHE = Path(os.environ.get("REWARDEDIT_TEST_XLA_CACHE", "/tmp/rewardedit-test-xla-cache"))


def cpu_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(_COMPILATION_CACHE))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env


def small_state(step: int) -> dict:
    """A small flattened "train state" (seeded by ``step``) to checkpoint without training."""
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(step)
    return {
        "params.w": jnp.asarray(rng.normal(size=(256, 256)).astype(np.float32)),
        "params.b": jnp.asarray(rng.normal(size=(256,)).astype(np.float32)),
        "step": jnp.asarray(np.int32(step)),
    }


def small_data_iterator():
    """A grain iterator to checkpoint alongside :func:`small_state`."""
    import grain

    return iter(grain.MapDataset.range(1000).batch(4).to_iter_dataset())


def save_small_checkpoints(checkpoints_dir: Path, steps) -> dict[int, int]:
    """Real checkpoints in the trainer's layout (``small_state(step)``, the data iterator after ``step``
    batches) at ``checkpoints_dir/<step>`` for each of ``steps``; returns the iterator position per step."""
    from rewardedit_jax import checkpoints

    manager = checkpoints.open_manager(checkpoints_dir, tiny_config("", "", async_checkpointing=False))
    data, positions = small_data_iterator(), {}
    for step in range(1, max(steps) + 1):
        next(data)
        if step in steps:
            checkpoints.save(manager, step, small_state(step), data)
            positions[step] = data.get_state()["next_index"]
    manager.close()
    return positions
