"""Helpers for the training and multi-process tests: the tiny config, running the CLI and multi-process
jobs, reading metrics, small checkpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "test_tiny.py"


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


def train_argv(workdir: Path, overrides: dict, *, config: Path = TINY_CONFIG) -> list[str]:
    """The command line of ``python -m rewardedit_jax.train`` with ``--config.KEY=VALUE`` overrides."""
    return [
        *(sys.executable, "-m", "rewardedit_jax.train"),
        *("--config", str(config), "--workdir", str(workdir)),
        *cli_args(overrides),
    ]


def run_cli(workdir: Path, overrides: dict, *, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_argv(workdir, overrides), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def start(argv: list[str], env: dict, **options) -> subprocess.Popen:
    """``argv`` started in the checkout with text pipes for its stdout and stderr."""
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, **options
    )


def free_port() -> int:
    """A TCP port of this machine that nothing listens on now (for a JAX coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_hosts(argv: list[str], env: dict, *, sep: str = "_", timeout: float = 600) -> list[str]:
    """``argv`` as processes 0 and 1 of a two-process JAX job on this machine; asserts that both exit 0 and
    returns their stderr. ``sep``: the separator of the CLI's flag words (``--num_processes`` or
    ``--num-processes``)."""
    port = free_port()
    flags = [f"--coordinator{sep}address=127.0.0.1:{port}", f"--num{sep}processes=2"]
    procs = [start([*argv, *flags, f"--process{sep}id={i}"], env) for i in range(2)]
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    return errs


def run_script(script: str, *args, devices: int, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -c script args...`` on ``devices`` CPU devices (the training tests' helpers importable);
    asserts that it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cpu_env(devices),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


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
