"""Preemption under fire: SIGKILL at random moments (also mid-save), damaged checkpoints skipped."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from fixtures_train import (
    REPO,
    cli_args,
    cpu_env,
    save_small_checkpoints,
    small_data_iterator,
    small_state,
    tiny_config,
)

from rewardedit_jax import checkpoints
from rewardedit_jax import workdir as workdir_lib
from rewardedit_jax.training import trainer

TMP_SUFFIX = ".orbax-checkpoint-tmp"


# --- the checkpoint module on a small state -----------------------------------------------------------


def _target() -> dict:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in small_state(0).items()}


def _config():
    return tiny_config("", "", async_checkpointing=False)


def _biggest_array_file(step_dir: Path) -> Path:
    return max((step_dir / "state").glob("ocdbt.process_*/d/*"), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


DAMAGE = {
    "truncated array file": (lambda d: _truncate(_biggest_array_file(d)), "OUT_OF_RANGE"),
    "deleted array file": (lambda d: _biggest_array_file(d).unlink(), "Error reading"),
    "deleted tree metadata": (lambda d: (d / "state" / "_METADATA").unlink(), "state/_METADATA is missing"),
    "garbage in the data state": (
        lambda d: next((d / "data").glob("*.json")).write_text("{garbage"),
        "data/process_0-of-1.json is not valid JSON",
    ),
    "garbage in the step metadata": (
        lambda d: (d / "_CHECKPOINT_METADATA").write_text('{"item_handlers": '),
        "_CHECKPOINT_METADATA is not valid JSON",
    ),
    "empty sharding file": (lambda d: os.truncate(d / "state" / "_sharding", 0), "state/_sharding is empty"),
    "partially written step": (lambda d: shutil.rmtree(d / "state"), "the item folder state/ is missing"),
}


def test_an_intact_checkpoint_passes_the_file_checks(tmp_path):
    save_small_checkpoints(tmp_path, {1})
    assert checkpoints.step_problem(tmp_path / "1", checkpoints.ITEMS) is None
    assert checkpoints.complete_steps(tmp_path) == [1]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_moved_aside_and_saved_again(tmp_path, caplog, damage):
    positions = save_small_checkpoints(tmp_path, {1, 2})
    corrupt, reason = DAMAGE[damage]
    corrupt(tmp_path / "2")
    manager = checkpoints.open_manager(tmp_path, _config())
    data = small_data_iterator()
    with caplog.at_level(logging.INFO, logger=checkpoints.__name__):
        step, restored = checkpoints.restore_newest(manager, _target(), data)
    assert step == 1
    for key, value in small_state(1).items():
        np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value))
    assert data.get_state()["next_index"] == positions[1]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping checkpoint")]
    assert len(skipped) == 1 and "\n" not in skipped[0], skipped
    assert skipped[0].startswith(f"skipping checkpoint {tmp_path / '2'}: ") and reason in skipped[0]
    assert any(r.getMessage() == f"resumed from {tmp_path / '1'} at step 1" for r in caplog.records)
    # Kept for inspection under another name, so that step 2 is saved again (Orbax saves only new steps).
    assert (tmp_path / "2.corrupt").is_dir() and not (tmp_path / "2").exists()
    checkpoints.save(manager, 2, small_state(2), data)
    manager.close()
    assert checkpoints.complete_steps(tmp_path) == [2, 1]
    assert checkpoints.step_problem(tmp_path / "2", checkpoints.ITEMS) is None


def test_when_no_checkpoint_restores_it_is_an_error_naming_each(tmp_path):
    save_small_checkpoints(tmp_path, {1, 2})
    (tmp_path / "2" / "state" / "_METADATA").unlink()
    _truncate(_biggest_array_file(tmp_path / "1"))
    manager = checkpoints.open_manager(tmp_path, _config())
    with pytest.raises(checkpoints.CheckpointError) as raised:
        checkpoints.restore_newest(manager, _target(), small_data_iterator())
    manager.close()
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: no checkpoint restores (")
    assert "2: state/_METADATA is missing" in message and "1: ValueError: OUT_OF_RANGE" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # nothing moved or deleted


def test_readers_take_the_newest_intact_step_and_move_nothing(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    save_small_checkpoints(ckpt, {1, 2})
    assert workdir_lib.latest_step(tmp_path) == 2
    (ckpt / "2" / "_CHECKPOINT_METADATA").unlink()
    with caplog.at_level(logging.WARNING, logger=checkpoints.__name__):
        assert workdir_lib.latest_step(tmp_path) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping checkpoint {ckpt / '2'}: _CHECKPOINT_METADATA is missing"
    ]
    os.truncate(ckpt / "1" / "state" / "_METADATA", 0)
    assert workdir_lib.latest_step(tmp_path) is None  # loading the model then fails naming both
    assert sorted(p.name for p in ckpt.iterdir()) == ["1", "2"]


def test_without_a_complete_checkpoint_training_starts_from_scratch(tmp_path):
    # What a kill in the middle of the first save leaves: the step's temporary folder only.
    save_small_checkpoints(tmp_path / "elsewhere", {1})
    shutil.copytree(tmp_path / "elsewhere" / "1", tmp_path / "run" / f"1{TMP_SUFFIX}")
    manager = checkpoints.open_manager(tmp_path / "run", _config())
    assert checkpoints.restore_newest(manager, _target(), small_data_iterator()) == (None, None)
    checkpoints.save(manager, 1, small_state(1), small_data_iterator())
    manager.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["1"]  # the leftover is cleaned up


def test_data_order_log_keeps_the_lines_of_the_steps_before_the_start(tmp_path):
    path = tmp_path / "data_order.jsonl"
    path.write_text("[1]\n[2]\n[3]\n[4]\n[5")  # a killed run: lines past its checkpoint, one cut off
    log = workdir_lib.DataOrderLog(tmp_path, 2, total_steps=4)
    assert path.read_text() == "[1]\n[2]\n"
    for line in ("[30]\n", "[40]\n", "[50]\n"):  # the batch after the last step is never trained on
        log.write(line)
        log.flush()
    log.close()
    assert path.read_text() == "[1]\n[2]\n[30]\n[40]\n"
    workdir_lib.DataOrderLog(tmp_path, 5, total_steps=8).close()  # cut-off last line dropped
    assert path.read_text() == "[1]\n[2]\n[30]\n[40]\n"
    workdir_lib.DataOrderLog(tmp_path, 0, total_steps=8).close()
    assert path.read_text() == ""


# --- end to end ---------------------------------------------------------------------------------------

# Every run of this module trains the same 16 steps of the tiny model, checkpoints every 2 steps,
# asynchronously, the last 2 kept.
RUN = {
    "total_steps": 16,
    "checkpoint_every_steps": 2,
    "keep_checkpoints": 2,
    "async_checkpointing": True,
    "log_every_steps": 1,
    "log_data_order": True,
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_tokenizer, synthetic_data_dir) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    config = tiny_config(tiny_tokenizer, synthetic_data_dir, **{**RUN, "keep_checkpoints": 4})  # 10 ... 16
    trainer.train_and_evaluate(config, workdir)
    return workdir


def _max_abs_difference(a: Path, b: Path, *, ema: bool) -> float:
    """Between the U-Net parameters of two workdirs or checkpoint folders."""
    from flax import nnx

    from rewardedit_jax import convert

    def params(src: Path) -> list[np.ndarray]:
        unet = convert.load_model_component(src, "unet", ema=ema)[0]
        return [np.asarray(x) for x in jax.tree.leaves(nnx.state(unet, nnx.Param))]

    pa, pb = params(a), params(b)
    assert len(pa) == len(pb)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(pa, pb))


def test_training_resumes_past_damaged_checkpoints_and_matches_an_uninterrupted_run(
    uninterrupted, tmp_path, caplog, tiny_tokenizer, synthetic_data_dir
):
    from rewardedit_jax import convert

    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    ckpt = workdir / "checkpoints"
    (ckpt / "16" / "state" / "_METADATA").write_text("{garbage")
    for path in (ckpt / "14" / "state" / "d").iterdir():  # the array database's root: no array reads
        path.unlink()
    with caplog.at_level(logging.WARNING, logger=checkpoints.__name__):
        # Readers (edit, evaluate, convert export) take the newest checkpoint that restores. The step
        # number alone comes from the file checks, which do not read arrays.
        assert workdir_lib.latest_step(workdir) == 14
        assert _max_abs_difference(workdir, ckpt / "12", ema=True) == 0.0
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping checkpoint")]
    assert len(skipped) == 3 and skipped[0] == skipped[1]  # by latest_step, then by the loading
    assert skipped[0].startswith(f"skipping checkpoint {ckpt / '16'}: state/_METADATA is not valid JSON (")
    assert skipped[2].startswith(f"skipping checkpoint {ckpt / '14'}: ValueError: Orbax cannot read the")
    with pytest.raises(convert.ConversionError, match=r"checkpoints/14: the checkpoint cannot be read \("):
        convert.load_model_component(ckpt / "14", "unet")

    caplog.clear()
    config = tiny_config(tiny_tokenizer, synthetic_data_dir, **RUN)
    with caplog.at_level(logging.INFO):
        result = trainer.train_and_evaluate(config, workdir)
    messages = [r.getMessage() for r in caplog.records]
    assert result["step"] == 16
    assert any(m.startswith(f"skipping checkpoint {ckpt / '16'}: ") for m in messages)
    assert any(m.startswith(f"skipping checkpoint {ckpt / '14'}: ") for m in messages)
    assert f"resumed from {ckpt / '12'} at step 12" in messages
    assert sorted(p.name for p in ckpt.iterdir()) == ["14", "14.corrupt", "16", "16.corrupt"]
    order = (workdir / "data_order.jsonl").read_text().splitlines()
    assert order == (uninterrupted / "data_order.jsonl").read_text().splitlines() and len(order) == 16
    for ema in (True, False):
        assert _max_abs_difference(workdir, uninterrupted, ema=ema) <= 1e-6


# --- SIGKILL at random moments ------------------------------------------------------------------------


def _complete_steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.is_file() else []


def _logged_step(path: Path, step: int) -> bool:
    return any(f"] step {step}/" in line for line in _log_lines(path))


def _wait(predicate, proc, timeout: float = 300.0) -> bool:
    """Poll ``predicate`` every 5 ms until it holds (True) or the process exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s")


def _kill(proc, kind: str, *, rng, log_path: Path, ckpt: Path, resume: int, startup_s: float):
    """SIGKILL the just started ``proc`` at a random moment of ``kind``: ``start`` (a time before the first
    step), ``step`` (a time after one of the next 5 steps is logged) or ``save`` (right after the first or
    second save after ``resume`` starts, when the one before has been finalized).

    Returns ``startup_s`` (lowered to the time until a step if seen) and whether the save was in flight.
    """
    started = time.monotonic()
    every = RUN["checkpoint_every_steps"]
    step, in_flight = None, False
    if kind == "start":
        delay = rng.uniform(1.0, startup_s)
        _wait(lambda: time.monotonic() - started > delay, proc)
    else:
        if kind == "step":
            step, delay = resume + rng.randint(1, 2 * every + 1), rng.uniform(0.0, 1.0)
        else:
            step, delay = resume + every * rng.randint(1, 2), rng.choice([0.0, 0.0, rng.uniform(0.0, 0.3)])
        if _wait(lambda: _logged_step(log_path, step), proc):
            startup_s = min(startup_s, time.monotonic() - started)
            if kind == "save":  # it starts after the step is logged, when an earlier kill's leftover is gone
                _wait(lambda: (ckpt / f"{step}{TMP_SUFFIX}").exists() or (ckpt / str(step)).exists(), proc)
            time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if kind == "save":
        in_flight = (ckpt / f"{step}{TMP_SUFFIX}").exists()
    return startup_s, in_flight


@pytest.mark.heavy
def test_sigkill_at_random_moments_then_restarts_resume_exactly(
    uninterrupted, tmp_path, tiny_tokenizer, synthetic_data_dir
):
    """11 seeded SIGKILLs of the training CLI (see ``_kill``): at a random time while it starts (imports,
    models, restore, compilation), a random time after a step is logged, and right after an asynchronous
    save starts (its temporary folder appears). Each restart must resume from the newest complete
    checkpoint at kill time; the run must finish with the uninterrupted run's parameters, EMA and data
    order, and no temporary folder left."""
    rng = random.Random(20240607)
    kills = ["start"] * 4 + ["step"] * 3 + ["save"] * 4
    rng.shuffle(kills)
    every, total = RUN["checkpoint_every_steps"], RUN["total_steps"]
    workdir = tmp_path / "run"
    ckpt = workdir / "checkpoints"
    overrides = {"model.tokenizer": tiny_tokenizer, "data.data_dir": synthetic_data_dir, **RUN}
    cmd = [sys.executable, "-m", "rewardedit_jax.train", "--config", str(REPO / "configs" / "test_tiny.py")]
    cmd += ["--workdir", str(workdir), *cli_args(overrides)]
    history = []  # per kill: kind, the complete checkpoints then, whether a save was in flight
    startup_s = 8.0  # until the first step; measured below
    for attempt in range(len(kills) + 1):
        resume = _complete_steps(ckpt)[-1] if _complete_steps(ckpt) else 0
        kind = kills[attempt] if attempt < len(kills) else None
        if kind in ("step", "save") and resume + 3 * every > total:
            kind = "start"  # too close to the end: the run could finish before the kill
        log_path = tmp_path / f"attempt{attempt}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=log_file, env=cpu_env(1), cwd=REPO)
        in_flight = False
        try:
            if kind is not None:
                startup_s, in_flight = _kill(
                    proc, kind, rng=rng, log_path=log_path, ckpt=ckpt, resume=resume, startup_s=startup_s
                )
            returncode = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = _log_lines(log_path)
        resumed = [line.split("resumed from ", 1)[1] for line in lines if "resumed from " in line]
        if resumed or any("compiled the train step" in line for line in lines):
            expected = [f"{ckpt / str(resume)} at step {resume}"] if resume else []
            assert resumed == expected, (history, resumed)
        assert not any("skipping checkpoint" in line for line in lines), "\n".join(lines[-30:])
        if kind is None or returncode != -signal.SIGKILL:
            break
        history.append((kind, _complete_steps(ckpt), in_flight))
    assert returncode == 0, "\n".join(_log_lines(log_path)[-30:])
    assert len(history) >= 10, history
    assert any(in_flight for _, _, in_flight in history), history  # killed during an asynchronous save
    assert not list(ckpt.glob(f"*{TMP_SUFFIX}")) and _complete_steps(ckpt) == [total - every, total]
    order = (workdir / "data_order.jsonl").read_text().splitlines()
    assert order == (uninterrupted / "data_order.jsonl").read_text().splitlines()
    for ema in (True, False):
        assert _max_abs_difference(workdir, uninterrupted, ema=ema) <= 1e-6
