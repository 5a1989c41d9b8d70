"""The launch scripts: local multi-process training matches one process; pod and SLURM dry runs and usage."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_train import REPO, TINY_CONFIG, cli_args, cpu_env, losses, run_cli, start

LAUNCH = REPO / "launch"

# Arguments a shell would mangle if the scripts pasted them unquoted: spaces, quotes, $, backticks, &&, ;.
# `gcloud compute tpus tpu-vm ssh` of the pod my-tpu, every worker (before --command).
POD_SSH = ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone", "us-east5-a", "--worker=all"]
TRICKY = ["--config.data.data_dir=gs://bucket/tf ds", "--config.note=it's $HOME `id` && echo x; y|z"]


def _script_env(bin_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "DRY_RUN"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def _fake_commands(tmp_path: Path, *names: str, record: bool = False) -> Path:
    """A folder of fake commands: they fail loudly, or with record=True write their argv to NAME.argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        path = bin_dir / name
        if record:
            body = f'printf \'%s\\0\' "$PWD" "$@" > {shlex.quote(str(tmp_path / name))}.argv\n'
        else:
            body = f'echo "fake {name} was called: $*" >&2\nexit 99\n'
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return bin_dir


def _recorded(tmp_path: Path, name: str) -> tuple[str, list[str]]:
    """(working directory, argv[1:]) of the last call of the recording fake command NAME."""
    cwd, *argv = (tmp_path / f"{name}.argv").read_text().split("\0")[:-1]
    return cwd, argv


def _run(script: str, *args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LAUNCH / script), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def _assert_usage_error(returncode: int, stdout: str, stderr: str, usage: str, message: str) -> None:
    """Exit status 2, nothing on stdout, one line on stderr: ``usage: launch/USAGE...`` naming the problem."""
    assert returncode == 2, stderr
    assert stdout == ""
    [line] = stderr.splitlines()
    assert line.startswith(f"usage: launch/{usage}") and message in line


def _trainer_argv(config: str, workdir: str, overrides: list[str]) -> list[str]:
    return ["-m", "rewardedit_jax.train", "--config", config, "--workdir", workdir, *overrides]


# --- TPU pod ------------------------------------------------------------------------------------------------


def test_tpu_pod_dry_run_prints_the_gcloud_command_and_what_each_worker_runs(tmp_path):
    env = _script_env(
        _fake_commands(tmp_path, "gcloud", "python3"),
        DRY_RUN="1",
        NUM_WORKERS="4",
        REPO_DIR=str(tmp_path / "my checkout"),
    )
    workdir = "gs://bucket/runs/stage 2"
    out = _run("tpu_pod.sh", "my-tpu", "us-east5-a", "configs/sd15_reward.py", workdir, *TRICKY, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    first, *workers = out.stdout.splitlines()
    gcloud = shlex.split(first)
    assert gcloud[:-1] == ["gcloud", *POD_SSH, "--command"]
    remote = gcloud[-1]
    assert workers == [f"worker {i}: {remote}" for i in range(4)]
    # What a worker's shell does with the command: cd into the checkout, then run exactly this argv.
    (tmp_path / "my checkout").mkdir()
    recorder = _fake_commands(tmp_path, "python3", record=True)
    subprocess.run(["bash", "-c", remote], env=_script_env(recorder), check=True, timeout=30)
    cwd, argv = _recorded(tmp_path, "python3")
    assert cwd == str(tmp_path / "my checkout")
    assert argv == _trainer_argv("configs/sd15_reward.py", workdir, TRICKY)


def test_tpu_pod_runs_gcloud_with_the_dry_run_command_and_expands_the_default_repo_on_the_worker(tmp_path):
    args = ["my-tpu", "us-east5-a", "configs/sd15_reward.py", "gs://bucket/runs/x", *TRICKY]
    dry = _run(
        "tpu_pod.sh", *args, env=_script_env(_fake_commands(tmp_path, "gcloud"), DRY_RUN="1", NUM_WORKERS="1")
    )
    assert dry.returncode == 0, dry.stderr
    remote = shlex.split(dry.stdout.splitlines()[0])[-1]
    assert remote.startswith("cd ~/rewardedit-jax && python3 ")

    real = _run("tpu_pod.sh", *args, env=_script_env(_fake_commands(tmp_path, "gcloud", record=True)))
    assert real.returncode == 0, real.stderr
    _, gcloud = _recorded(tmp_path, "gcloud")
    assert gcloud == [*POD_SSH, "--command", remote]
    # The worker's home, not this machine's, holds the checkout.
    home = tmp_path / "worker home"
    (home / "rewardedit-jax").mkdir(parents=True)
    recorder = _fake_commands(tmp_path, "python3", record=True)
    subprocess.run(["bash", "-c", remote], env=_script_env(recorder, HOME=str(home)), check=True, timeout=30)
    cwd, argv = _recorded(tmp_path, "python3")
    assert cwd == str(home / "rewardedit-jax")
    assert argv == _trainer_argv("configs/sd15_reward.py", "gs://bucket/runs/x", TRICKY)


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "missing TPU_NAME ZONE CONFIG WORKDIR"),
        (["tpu", "zone", "configs/x.py"], {}, "missing WORKDIR"),
        (["tpu", "", "configs/x.py", "gs://b/w"], {}, "ZONE is empty"),
        (["tpu", "zone", "configs/x.py", "gs://b/w"], {"DRY_RUN": "1"}, "DRY_RUN=1 needs NUM_WORKERS"),
        (["tpu", "zone", "configs/x.py", "gs://b/w"], {"DRY_RUN": "1", "NUM_WORKERS": "0"}, "NUM_WORKERS"),
        (["tpu", "zone", "configs/x.py", "gs://b/w"], {"DRY_RUN": "yes"}, "DRY_RUN must be 0 or 1"),
    ],
)
def test_tpu_pod_bad_arguments_exit_2_with_a_usage_line(tmp_path, args, env, message):
    out = _run("tpu_pod.sh", *args, env=_script_env(_fake_commands(tmp_path, "gcloud"), **env))
    _assert_usage_error(
        out.returncode, out.stdout, out.stderr, "tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR", message
    )


# --- SLURM --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodes_env, tasks",
    [({"SLURM_NNODES": "3", "SLURM_JOB_NUM_NODES": "5"}, 3), ({"SLURM_JOB_NUM_NODES": "2"}, 2), ({}, 1)],
)
def test_slurm_dry_run_prints_the_srun_command_and_what_each_task_runs(tmp_path, nodes_env, tasks):
    env = _script_env(_fake_commands(tmp_path, "srun", "python"), DRY_RUN="1", **nodes_env)
    workdir = "gs://bucket/runs/stage 2"
    out = _run("slurm_gpu.sbatch", "configs/sd15_reward.py", workdir, *TRICKY, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    first, *lines = out.stdout.splitlines()
    task_argv = ["python", *_trainer_argv("configs/sd15_reward.py", workdir, TRICKY)]
    assert shlex.split(first) == ["srun", "--kill-on-bad-exit=1", *task_argv]
    assert len(lines) == tasks
    for i, line in enumerate(lines):
        prefix = f"task {i}: "
        assert line.startswith(prefix)
        assert shlex.split(line[len(prefix) :]) == task_argv


def test_slurm_runs_srun_with_the_trainer_argv(tmp_path):
    env = _script_env(_fake_commands(tmp_path, "srun", record=True), PYTHON="/opt/venv/bin/python")
    out = _run("slurm_gpu.sbatch", "configs/sd15_reward.py", "gs://bucket/runs/x", *TRICKY, env=env)
    assert out.returncode == 0, out.stderr
    _, argv = _recorded(tmp_path, "srun")
    trainer = _trainer_argv("configs/sd15_reward.py", "gs://bucket/runs/x", TRICKY)
    assert argv == ["--kill-on-bad-exit=1", "/opt/venv/bin/python", *trainer]


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "missing CONFIG WORKDIR"),
        (["configs/x.py"], {}, "missing WORKDIR"),
        (["configs/x.py", ""], {}, "WORKDIR is empty"),
        (["configs/x.py", "gs://b/w"], {"DRY_RUN": "1", "SLURM_NNODES": "two"}, "SLURM_NNODES"),
    ],
)
def test_slurm_bad_arguments_exit_2_with_a_usage_line(tmp_path, args, env, message):
    out = _run("slurm_gpu.sbatch", *args, env=_script_env(_fake_commands(tmp_path, "srun"), **env))
    _assert_usage_error(out.returncode, out.stdout, out.stderr, "slurm_gpu.sbatch CONFIG WORKDIR", message)


# --- local multi-process ------------------------------------------------------------------------------------


def _start_local(args: list[str], env: dict) -> subprocess.Popen:
    # Its own session, so that a test that fails can kill the script together with its processes.
    return start([str(LAUNCH / "local_multiprocess.sh"), *args], env, start_new_session=True)


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def test_two_local_processes_match_one_process(tmp_path, tiny_tokenizer, synthetic_data_dir):
    overrides = {
        "model.tokenizer": tiny_tokenizer,
        "data.data_dir": synthetic_data_dir,
        "total_steps": 4,
        "log_every_steps": 1,
        "checkpoint_every_steps": 4,
    }
    one = run_cli(tmp_path / "one", overrides, env=cpu_env(4))
    assert one.returncode == 0, one.stderr[-2000:]
    args = ["2", "2", "--config", str(TINY_CONFIG), "--workdir", str(tmp_path / "two"), *cli_args(overrides)]
    proc = _start_local(args, {**cpu_env(1), "PYTHON": sys.executable})
    _, err = _communicate(proc, timeout=600)
    assert proc.returncode == 0, err[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * max(1.0, abs(a[step])), (step, a[step], b[step])
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["4"]


# A stand-in for the trainer: appends every SIGTERM it gets to term-ID, then writes its pid to pid-ID. The
# process FAIL_ID exits with FAIL_STATUS once every process has written its pid; the others run until
# SIGTERM (or, with IGNORE_TERM=1, until SIGKILL, like a process blocked in a collective).
FAKE_TRAINER = """#!/usr/bin/env bash
for arg; do
  case $arg in --process_id=*) id=${arg#*=} ;; --num_processes=*) n=${arg#*=} ;; esac
done
trap 'echo TERM >> "$FAKE_DIR/term-$id"; [[ ${IGNORE_TERM:-0} == 1 ]] || exit 0' TERM
echo $$ > "$FAKE_DIR/pid-$id"
if [[ $id == "${FAIL_ID:-}" ]]; then
  while started=("$FAKE_DIR"/pid-*); ((${#started[@]} < n)); do sleep 0.05; done
  exit "$FAIL_STATUS"
fi
while true; do sleep 0.1; done
"""


def _fake_trainer_env(tmp_path: Path, **extra: str) -> dict:
    python = tmp_path / "fake-python"
    python.write_text(FAKE_TRAINER)
    python.chmod(0o755)
    return {**os.environ, "PYTHON": str(python), "PORT": "1", "FAKE_DIR": str(tmp_path), **extra}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_local_failure_of_one_process_stops_the_others_and_exits_with_its_status(tmp_path):
    env = _fake_trainer_env(tmp_path, FAIL_ID="1", FAIL_STATUS="7", IGNORE_TERM="1", KILL_AFTER_S="1")
    start = time.monotonic()
    proc = _start_local(["3", "1", "--config", "c.py", "--workdir", "w"], env)
    _, err = _communicate(proc, timeout=60)
    assert proc.returncode == 7, err
    assert time.monotonic() - start < 30
    assert "exited with status 7" in err and "SIGKILL" in err
    for i in (0, 2):  # asked to stop first, then killed
        assert (tmp_path / f"term-{i}").read_text().split() == ["TERM"]
        assert _gone(int((tmp_path / f"pid-{i}").read_text()))


def test_local_sigterm_is_passed_on_to_every_process(tmp_path):
    proc = _start_local(["2", "1", "--config", "c.py", "--workdir", "w"], _fake_trainer_env(tmp_path))
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"pid-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and proc.poll() is None, "fake processes did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = _communicate(proc, timeout=30)
    assert proc.returncode == 143, err
    for i in range(2):
        assert (tmp_path / f"term-{i}").read_text().split() == ["TERM"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing NUM_PROCESSES DEVICES_PER_PROCESS TRAINER_ARGS"),
        (["2", "2"], "missing TRAINER_ARGS"),
        (["0", "2", "--config", "c.py"], "NUM_PROCESSES must be a positive integer, got '0'"),
        (["2", "x", "--config", "c.py"], "DEVICES_PER_PROCESS must be a positive integer, got 'x'"),
    ],
)
def test_local_bad_arguments_exit_2_with_a_usage_line(tmp_path, args, message):
    proc = _start_local(args, _fake_trainer_env(tmp_path))
    out, err = _communicate(proc, timeout=30)
    _assert_usage_error(proc.returncode, out, err, "local_multiprocess.sh NUM_PROCESSES", message)
    assert not list(tmp_path.glob("pid-*"))
