"""An installed libtpu must not make CPU-only commands probe for a TPU (rewardedit_jax.platforms)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu", reason="the tpu extra is not installed (make test installs it)")

PROBE = "import jax; print(jax.default_backend())"


def run(code):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_PLATFORMS", "TPU_"))}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_plain_jax_probes_for_a_tpu_here():
    """The problem the package avoids: this machine has libtpu and no TPU, and bare jax looks for one."""
    from rewardedit_jax import platforms

    if platforms.has_accelerator():
        pytest.skip("this machine has an accelerator; the probe is wanted here")
    result = run(PROBE)
    assert result.returncode == 0, result.stderr
    assert "TPU" in result.stderr


def test_importing_the_package_keeps_jax_on_the_cpu_quietly():
    from rewardedit_jax import platforms

    if platforms.has_accelerator():
        pytest.skip("this machine has an accelerator; the probe is wanted here")
    result = run("import rewardedit_jax; " + PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu"
    assert "TPU" not in result.stderr, result.stderr


def test_an_explicit_platform_choice_is_kept():
    result = run(
        "import os; os.environ['JAX_PLATFORMS'] = 'cpu,tpu'; import rewardedit_jax, jax; "
        "print(jax.config.jax_platforms)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu,tpu"
