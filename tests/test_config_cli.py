"""``train`` and ``aot`` report a bad ``--config`` argument in one line, exit status 2, nothing started."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fixtures_train import REPO, cpu_env

CASES = [
    (["--config.nonexistent=1"], "error: --config.nonexistent=1: the config has no key 'nonexistent'"),
    (["--config.data.nonexistent=1"], "error: --config.data.nonexistent=1: the config has no key 'data.no"),
    (["--config.batch_size=abc"], "error: flag --config.batch_size=abc: invalid literal for int()"),
    (["--config.mesh.allow_split_physical_axes=7"], "error: flag --config.mesh.allow_split_physical_axes=7"),
]  # fmt: skip


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cpu_env(1),
        cwd=REPO,
    )


@pytest.mark.parametrize("module", ["rewardedit_jax.train", "rewardedit_jax.aot"])
@pytest.mark.parametrize("args, message", CASES)
def test_a_bad_override_is_one_line_naming_it(module, args, message, tmp_path):
    workdir = ["--workdir", str(tmp_path / "w")] if module.endswith("train") else []
    proc = _run(module, "--config", "configs/demo.py", *workdir, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_a_missing_config_file_is_one_line_naming_it(tmp_path):
    proc = _run("rewardedit_jax.train", "--config", "configs/nope.py", "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "error: --config configs/nope.py: cannot load the config file: "
        "[Errno 2] No such file or directory: 'configs/nope.py'"
    )
