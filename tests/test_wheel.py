"""The installed package, not the checkout: a wheel in a fresh virtual environment builds the synthetic data,
trains with a copy of configs/demo.py and edits with the trained model, all from a directory outside the
checkout.

The wheel is built from a copy of the sources (no build outputs in the checkout). The new environment gets
its dependencies from the test environment's site-packages, listed in a ``.pth`` file as plain paths: the
``.pth`` files in there (an editable install of this checkout among them) are not run, so
``rewardedit_jax`` can only come from the wheel, which the test checks.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, *, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def _build_wheel(tmp_path: Path, env: dict) -> Path:
    src = tmp_path / "src"
    shutil.copytree(
        REPO / "rewardedit_jax", src / "rewardedit_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
    _run([*pip_wheel, "-w", str(wheels)], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("rewardedit_jax-*.whl")
    return wheel


def _make_venv(tmp_path: Path, wheel: Path, env: dict) -> Path:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env
    ).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "test_env_dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    install = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-deps",
        "--no-index",
    ]
    _run([*install, str(wheel)], cwd=tmp_path, env=env)
    return python


@pytest.mark.heavy
def test_an_installed_wheel_builds_the_data_trains_and_edits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    times = {}
    start = time.perf_counter()
    wheel = _build_wheel(tmp_path, env)
    names = zipfile.ZipFile(wheel).namelist()
    assert "rewardedit_jax/configs/default.py" in names and "rewardedit_jax/configs/demo.py" in names
    assert "rewardedit_jax/tfds_builders/synthetic_edit/synthetic_edit_dataset_builder.py" in names
    assert not [
        n for n in names if n.startswith(("configs/", "tfds_builders/", "tests/")) or "dummy_data" in n
    ]
    python = _make_venv(tmp_path, wheel, env)
    times["wheel and venv"] = time.perf_counter() - start

    work = tmp_path / "work"  # outside the checkout, where `python -m` looks for modules first
    work.mkdir()
    where = _run([python, "-c", "import rewardedit_jax; print(rewardedit_jax.__file__)"], cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(python.parent.parent), where.stdout

    # The demo's build: `tfds build synthetic_edit/tiny` by name, the packaged builders imported.
    t = time.perf_counter()
    build = (
        "from pathlib import Path; from rewardedit_jax import demo; demo.build_dataset(Path('data'), 'tiny')"
    )
    _run([python, "-c", build], cwd=work, env=env)
    assert (work / "data" / "synthetic_edit" / "tiny").is_dir()
    times["tfds build"] = time.perf_counter() - t

    # A copy of configs/demo.py; no tokenizer given (the run makes the dataset's), the data found through
    # TFDS_DATA_DIR. The overrides only make it small: the tiny data, 2 steps, a 2-edit oracle evaluation.
    shutil.copy(REPO / "configs" / "demo.py", work / "my_demo.py")
    overrides = {
        "data.name": "synthetic_edit/tiny",
        "total_steps": 2,
        "batch_size": 4,
        "warmup_steps": 0,
        "log_every_steps": 1,
        "checkpoint_every_steps": 2,
        "evals.oracle.data": "synthetic_edit/tiny",
        "evals.oracle.num_edits": 2,
        "evals.oracle.steps": 1,
        "evals.oracle.batch_size": 2,
    }
    train = [python, "-m", "rewardedit_jax.train", "--config", "my_demo.py", "--workdir", "run"]
    t = time.perf_counter()
    _run(
        [*train, *(f"--config.{k}={v}" for k, v in overrides.items())],
        cwd=work,
        env={**env, "TFDS_DATA_DIR": str(work / "data")},
    )
    assert (work / "run" / "checkpoints" / "2").is_dir()
    assert (work / "run" / "model" / "tokenizer").is_dir()
    times["train"] = time.perf_counter() - t

    image = np.full((32, 32, 3), 245, np.uint8)
    image[8:24, 8:24] = (40, 80, 220)
    Image.fromarray(image).save(work / "square.png")
    edit = [
        python,
        "-m",
        "rewardedit_jax.edit",
        "--model",
        "run",
        "--image",
        "square.png",
        "--out",
        "out.png",
    ]
    t = time.perf_counter()
    _run(
        [*edit, "--instruction", "make the square red", "--steps", "2", "--resolution", "64"],
        cwd=work,
        env=env,
    )
    assert Image.open(work / "out.png").size == (64, 64)
    times["edit"] = time.perf_counter() - t
    print("seconds:", {k: round(v, 1) for k, v in times.items()})
