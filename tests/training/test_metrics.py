"""The metrics writer: metrics.jsonl, TensorBoard events (read back by TensorBoard's own reader), local and
on GCS, and optional W&B logging (offline mode, read back from W&B's run file)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from fixtures_events import (
    tensorboard_images,
    tensorboard_scalars,
    wandb_history,
    wandb_run_files,
    wandb_run_id,
)
from PIL import Image

from rewardedit_jax import report
from rewardedit_jax.training import metrics
from rewardedit_jax.training.sharding import ConfigError

FAKE_WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # a 40-character key, never a real one


def _image(seed: int, shape=(24, 40, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_some(writer: metrics.MetricsWriter) -> None:
    writer.write(1, {"learning/loss": 0.5, "learning/lr": 1e-4})
    writer.write(2, {"learning/loss": 0.25, "learning/lr": float("nan")})
    writer.image(2, "eval/oracle", _image(0))
    writer.write(3, {"learning/loss": float("inf"), "eval/oracle/l1": 0.125})
    writer.image(3, "eval/oracle", _image(1))


def test_scalars_and_images_are_read_back_by_tensorboard_and_rows_by_json(tmp_path):
    writer = metrics.MetricsWriter(tmp_path / "run")
    _write_some(writer)
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [
        {"step": 1, "learning/loss": 0.5, "learning/lr": 1e-4},
        {"step": 2, "learning/loss": 0.25, "learning/lr": "nan"},
        {"step": 3, "learning/loss": "inf", "eval/oracle/l1": 0.125},
    ]
    assert metrics.read_metrics(tmp_path / "run") == rows
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    # non-finite values are in metrics.jsonl (as strings) but not TensorBoard scalars
    assert scalars == {
        "learning/loss": {1: 0.5, 2: 0.25},
        "learning/lr": {1: pytest.approx(1e-4)},
        "eval/oracle/l1": {3: 0.125},
    }
    images = tensorboard_images(tmp_path / "run" / "tensorboard")
    assert sorted(images) == [("eval/oracle", 2), ("eval/oracle", 3)]
    np.testing.assert_array_equal(images[("eval/oracle", 2)], _image(0))
    np.testing.assert_array_equal(images[("eval/oracle", 3)], _image(1))


def test_each_write_is_in_the_event_file_when_it_returns(tmp_path):
    writer = metrics.MetricsWriter(tmp_path)
    writer.write(7, {"learning/loss": 1.5})
    assert tensorboard_scalars(tmp_path / "tensorboard") == {"learning/loss": {7: 1.5}}  # before close
    writer.close()


def test_writers_started_at_once_in_one_folder_keep_their_own_files(tmp_path):
    first, second = metrics.MetricsWriter(tmp_path), metrics.MetricsWriter(tmp_path)  # the same second
    first.write(1, {"a": 1.0})
    second.write(2, {"a": 2.0})
    first.close()
    second.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert tensorboard_scalars(tmp_path / "tensorboard") == {"a": {1: 1.0, 2: 2.0}}
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]


def test_a_disabled_writer_writes_nothing(tmp_path):
    writer = metrics.MetricsWriter(tmp_path / "run", enabled=False, wandb={"enabled": True})
    _write_some(writer)
    writer.close(exit_code=1)
    assert not (tmp_path / "run").exists()


def test_png_bytes_are_the_image(tmp_path):
    image = _image(2)
    path = tmp_path / "a.png"
    path.write_bytes(report.png_bytes(image))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


# --- GCS ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs():
    from fixtures_gcs import GcsEmulator

    with GcsEmulator() as emulator:
        yield emulator


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_remote_event_file_is_uploaded_when_due_and_whole_on_close(gcs, tmp_path):
    from etils import epath

    writer = metrics.MetricsWriter(gcs.url("tb/run"), flush_interval_s=3600)
    events = [n for n in gcs.objects("tb/run/") if n.startswith("tb/run/tensorboard/events.out.tfevents.")]
    assert len(events) == 1  # uploaded at once (the file version record), as a local file appears at once
    uploaded = epath.Path(gcs.url(events[0])).read_bytes()
    _write_some(writer)
    assert epath.Path(gcs.url(events[0])).read_bytes() == uploaded  # within the interval: not yet
    local = writer._tb.local_file
    writer.close()
    assert not local.exists()  # the local copy is temporary
    assert sorted(gcs.objects("tb/run/")) == sorted(["tb/run/metrics.jsonl", events[0]])
    download = tmp_path / "tb"
    download.mkdir()
    (download / events[0].rsplit("/", 1)[1]).write_bytes(epath.Path(gcs.url(events[0])).read_bytes())
    assert tensorboard_scalars(download)["learning/loss"] == {1: 0.5, 2: 0.25}
    assert sorted(tensorboard_images(download)) == [("eval/oracle", 2), ("eval/oracle", 3)]
    assert len(epath.Path(gcs.url("tb/run/metrics.jsonl")).read_text().splitlines()) == 3


# --- W&B ---------------------------------------------------------------------------------------------------


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B offline, its files under tmp_path/wandb, a fake API key in the environment."""
    pytest.importorskip("wandb")
    folder = tmp_path / "wandb"
    folder.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(folder))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return folder


def _files_containing(root, text: str) -> list:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_wandb_offline_logs_the_same_scalars_and_images_and_a_resume_continues_the_run(tmp_path, wandb_env):
    settings = {"enabled": True, "project": "rewardedit-test", "name": "", "tags": "a, b", "mode": ""}
    writer = metrics.MetricsWriter(tmp_path / "run", wandb=settings, run_config={"seed": 3})
    _write_some(writer)
    writer.close()
    (run_file,) = wandb_run_files(wandb_env)
    history = wandb_history(run_file)
    assert sorted(history) == [1, 2, 3]
    assert history[1]["learning/loss"] == 0.5 and history[1]["learning/lr"] == pytest.approx(1e-4)
    assert history[2]["learning/loss"] == 0.25 and "learning/lr" not in history[2]  # nan: as TensorBoard
    assert history[3]["eval/oracle/l1"] == 0.125 and "learning/loss" not in history[3]
    for step, seed in ((2, 0), (3, 1)):
        image = history[step]["eval/oracle"]
        assert image["_type"] == "image-file"
        png = run_file.parent / "files" / image["path"]
        np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), _image(seed))
    run_id = json.loads((tmp_path / "run" / metrics.WANDB_RUN_FILE).read_text())["id"]
    assert wandb_run_id(run_file) == run_id and run_file.name == f"run-{run_id}.wandb"

    # resuming in the same workdir continues the same W&B run
    writer = metrics.MetricsWriter(tmp_path / "run", wandb=settings)
    writer.write(4, {"learning/loss": 0.125})
    writer.close()
    runs = wandb_run_files(wandb_env)
    assert len(runs) == 2 and {wandb_run_id(r) for r in runs} == {run_id}
    assert wandb_history(runs[1 - runs.index(run_file)])[4]["learning/loss"] == 0.125
    # the API key comes from the environment and is written nowhere
    assert _files_containing(tmp_path, FAKE_WANDB_KEY) == []


def test_wandb_settings_name_the_run_and_its_folder(tmp_path, wandb_env):
    folder = tmp_path / "elsewhere"
    settings = {"enabled": True, "name": "my-run", "id": "fixedid1", "dir": str(folder), "mode": "offline"}
    writer = metrics.MetricsWriter(tmp_path / "run", wandb=settings)
    assert writer._wandb.run.name == "my-run" and writer._wandb.run.id == "fixedid1"
    writer.write(1, {"x": 1.0})
    writer.close(exit_code=1)
    assert wandb_run_files(wandb_env) == []
    (run_file,) = wandb_run_files(folder)
    assert run_file.name == "run-fixedid1.wandb" and wandb_history(run_file)[1]["x"] == 1.0
    assert not (tmp_path / "run" / metrics.WANDB_RUN_FILE).exists()  # an explicit id is not stored


def test_wandb_on_without_the_package_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails, find_spec finds nothing
    metrics.check_wandb_config({"enabled": False})  # off: wandb is not needed
    with pytest.raises(ConfigError) as e:
        metrics.MetricsWriter(tmp_path / "run", wandb={"enabled": True, "mode": ""})
    assert "wandb is not installed" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="config.metrics.wandb.mode must be"):
        metrics.check_wandb_config({"enabled": True, "mode": "cloud"})


def test_the_training_config_checks_wandb_before_anything_is_built(monkeypatch):
    from fixtures_train import tiny_config

    from rewardedit_jax.training import trainer

    config = tiny_config("", "")
    assert not config.metrics.wandb.enabled  # off by default
    config.metrics.wandb.enabled = True
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match="wandb is not installed"):
        trainer.check_config(config, 1)
    config.metrics.wandb.api_key = "x"
    with pytest.raises(ConfigError, match="unknown config key config.metrics.wandb.api_key"):
        trainer.check_config(config, 1)
