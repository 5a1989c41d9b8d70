"""Test-suite setup: CPU JAX with float32 matmuls at full precision, quiet logs; the fixtures every folder
shares: the tiny datasets and models (each built once per test run), the tiny tokenizer, the fake judge."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

_BUILT = ".built"  # written last: a folder without it is a build that failed half-way


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder ``name`` filled by ``build(folder)`` once per test run.

    Under pytest-xdist the workers share one folder beside their own temporary roots (the run's base
    temporary folder); the first worker to ask builds it under a file lock while the others wait, then all
    read it. Tests must not write into it. Without xdist it is a fresh folder of this process.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / "shared" / name
    folder.parent.mkdir(exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / _BUILT).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / _BUILT).touch()
    return folder


def _build_synthetic_edit(data_dir: Path) -> None:
    from rewardedit_jax.tfds_builders.synthetic_edit import synthetic_edit_dataset_builder

    builder = synthetic_edit_dataset_builder.Builder(
        config="tiny", data_dir=data_dir, file_format="array_record"
    )
    builder.download_and_prepare()


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data_dir holding `synthetic_edit/tiny` (48 train / 16 test edits, 32x32)."""
    return built_once(tmp_path_factory, "synthetic_edit_tiny", _build_synthetic_edit)


@pytest.fixture(scope="session")
def real_edit_data_dir(tmp_path_factory) -> tuple[Path, Path]:
    """(data_dir, manual_dir) of a tiny `real_edit`: a wide photo (150x70, 1 edit), a square one (70x70,
    2 edits); see fixtures_real_edit."""
    from fixtures_real_edit import build_tiny_real_edit

    root = built_once(tmp_path_factory, "real_edit_tiny", build_tiny_real_edit)
    return root / "data", root / "manual"


def _pipeline_fixture(tmp_path_factory, *, reward: bool) -> Path:
    from fixtures_pipeline import save_tiny_two_level_pipeline

    name = "reward_pipeline" if reward else "pipeline"
    root = built_once(tmp_path_factory, name, lambda r: save_tiny_two_level_pipeline(r / name, reward=reward))
    return root / name


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny random stock InstructPix2Pix pipeline (fixtures_pipeline.save_tiny_two_level_pipeline)."""
    return _pipeline_fixture(tmp_path_factory, reward=False)


@pytest.fixture(scope="session")
def tiny_reward_pipeline_dir(tmp_path_factory) -> Path:
    """The reward variant of ``tiny_pipeline_dir`` (the same weights where the two U-Nets share a layer)."""
    return _pipeline_fixture(tmp_path_factory, reward=True)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A CLIP tokenizer folder with the tiny vocabulary of fixtures_sd (cheap: one per process)."""
    from fixtures_sd import save_tiny_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    save_tiny_tokenizer(path)
    return path


@pytest.fixture
def judge_server():
    """The local chat-completions server of judge/chat_server.py, serving on a thread."""
    from judge.chat_server import JudgeServer

    server = JudgeServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_key(monkeypatch) -> str:
    """A fake OpenAI key in the environment; tests assert it never reaches a file."""
    from judge.chat_server import FAKE_KEY

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return FAKE_KEY
