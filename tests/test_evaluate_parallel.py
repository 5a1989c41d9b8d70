"""Data-parallel ``evaluate`` (8 CPU devices, two hosts) and the seeding of edits: what a run makes must not
depend on the devices, the hosts or ``--batch-size``, and every edit draws its own noise by default."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_train import cpu_env, run_two_hosts
from PIL import Image

from rewardedit_jax import evaluate as ev
from rewardedit_jax import parallel

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

FAST_COMPILE = {"xla_backend_optimization_level": 0}
LIMIT = 6
BATCH = 2  # per device: 8 devices sample the 6 edits in one call of 16, one device in 3 calls of 2


def cli_env(devices: int) -> dict:
    env = cpu_env(devices)
    env["XLA_FLAGS"] += " --xla_backend_optimization_level=0"  # tiny models: compile time dominates
    return env


def evaluate_argv(model: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rewardedit_jax.evaluate",
        *("--model", str(model), "--benchmark", "synthetic_edit/tiny", "--data-dir", str(data_dir)),
        *("--out", str(out), "--judge", "oracle", "--steps", "2", "--batch-size", str(BATCH)),
        *("--limit", str(LIMIT), "--no-progress"),
    ]


def run_evaluate(argv: list[str], devices: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, env=cli_env(devices), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def images(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), np.float64) / 255.0 for p in sorted((out / "images").iterdir())}


def assert_same_edits(a: Path, b: Path) -> None:
    first, second = images(a), images(b)
    assert sorted(first) == sorted(second) and len(first) == LIMIT
    for name in first:
        assert np.abs(first[name] - second[name]).max() <= 1e-5, name


def without_devices(results: dict) -> dict:
    """results.json less what depends on the machines that ran it: devices, hosts and the run's stats."""
    config = {k: v for k, v in results["config"].items() if k not in ("devices", "hosts")}
    return {**{k: v for k, v in results.items() if k != "run"}, "config": config}


@pytest.fixture(scope="module")
def one_device(tiny_pipeline_dir, synthetic_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel_one") / "run"
    proc = run_evaluate(evaluate_argv(tiny_pipeline_dir, synthetic_data_dir, out), devices=1)
    assert "(1 device)" in proc.stderr
    return out, json.loads((out / "results.json").read_text())


def test_eight_devices_write_the_same_edits_and_results_as_one(
    one_device, tiny_pipeline_dir, synthetic_data_dir, tmp_path
):
    out = tmp_path / "eight"
    proc = run_evaluate(evaluate_argv(tiny_pipeline_dir, synthetic_data_dir, out), devices=8)
    assert "(8 devices)" in proc.stderr and f"batch {8 * BATCH} at 32x32" in proc.stderr  # sharded calls
    results = json.loads((out / "results.json").read_text())
    assert_same_edits(one_device[0], out)
    assert without_devices(results) == without_devices(one_device[1])
    assert (results["config"]["devices"], results["config"]["hosts"]) == (8, 1)
    assert (one_device[1]["config"]["devices"], one_device[1]["config"]["hosts"]) == (1, 1)
    assert results["run"]["generated"] == LIMIT and results["run"]["compilations"] == 1


def test_two_hosts_write_one_results_json_with_the_edits_of_one_device(
    one_device, tiny_pipeline_dir, synthetic_data_dir, tmp_path
):
    out = tmp_path / "two_hosts"
    argv = evaluate_argv(tiny_pipeline_dir, synthetic_data_dir, out)
    errs = run_two_hosts(argv, cli_env(2), sep="-", timeout=300)
    assert "2 devices on each of 2 hosts" in errs[0]
    assert "wrote" in errs[0] and "results.json" in errs[0]  # process 0 judges and writes
    assert "process 1: generated its share" in errs[1] and "results.json" not in errs[1]
    assert sorted(p.name for p in out.glob("*.json")) == ["generation.json", "results.json"]
    results = json.loads((out / "results.json").read_text())
    assert_same_edits(one_device[0], out)
    assert without_devices(results) == without_devices(one_device[1])
    assert (results["config"]["devices"], results["config"]["hosts"]) == (4, 2)
    assert results["run"]["generated"] == LIMIT and results["run"]["judged"] == LIMIT
    assert len((out / "judgments.jsonl").read_text().splitlines()) == LIMIT  # judged once, by process 0


QUICK = dict(judge="none", steps=2, compiler_options=FAST_COMPILE, progress=False, log=None)


def test_batch_size_does_not_change_the_edits(tiny_pipeline_dir, synthetic_data_dir, tmp_path):
    """Seeds come from the edit's index, not its place in a batch (per-device batches 1 and 3 here; see
    docs/evaluation.md for the float rounding of other batch shapes)."""
    for batch in (1, 3):
        ev.evaluate(
            tiny_pipeline_dir,
            "synthetic_edit",
            synthetic_data_dir,
            tmp_path / f"b{batch}",
            batch_size=batch,
            limit=LIMIT,
            **QUICK,
        )
    first, second = images(tmp_path / "b1"), images(tmp_path / "b3")
    assert sorted(first) == sorted(second) and len(first) == LIMIT
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_each_edit_draws_its_own_noise_unless_shared(
    tiny_pipeline_dir, synthetic_data_dir, tmp_path, monkeypatch
):
    """Edits 0 and 1 with the same source and instruction: different edits by default (seeds 42 and 43, as the
    official eval.py draws fresh noise for every edit), the same edit with ``shared_noise``."""
    from rewardedit_jax import data

    load = data.load_data_source

    class FirstTwice:
        def __init__(self, records):
            self.records = records

        def __len__(self):
            return len(self.records)

        def __getitem__(self, index):
            return self.records[0 if index == 1 else index]

    def duplicated(*args, **kwargs):
        records, info = load(*args, **kwargs)
        return FirstTwice(records), info

    monkeypatch.setattr(data, "load_data_source", duplicated)
    edited = {}
    for shared in (False, True):
        out = tmp_path / f"shared_{shared}"
        results = ev.evaluate(
            tiny_pipeline_dir,
            "synthetic_edit",
            synthetic_data_dir,
            out,
            shared_noise=shared,
            batch_size=2,
            limit=2,
            **QUICK,
        )
        assert results["config"]["generation"]["seed_per_edit"] is not shared
        edited[shared] = list(images(out).values())
    assert not np.array_equal(edited[False][0], edited[False][1])
    np.testing.assert_array_equal(edited[True][0], edited[True][1])
    np.testing.assert_array_equal(edited[True][0], edited[False][0])  # edit 0 is seeded 42 either way


def test_an_out_folder_the_other_hosts_do_not_write_to_is_a_one_line_error(
    tiny_pipeline_dir, synthetic_data_dir, tmp_path, monkeypatch
):
    """Process 0 of two hosts whose partner wrote its share elsewhere (simulated: it never writes here)."""
    monkeypatch.setattr(parallel, "hosts", lambda: (2, 0))
    message = (
        r"lacks 3 edits other hosts made \(e\.g\. 0001_.*\.png\); --out must be a folder every host writes to"
    )
    with pytest.raises(ev.EvaluationError, match=message):
        ev.evaluate(
            tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, tmp_path / "out", limit=LIMIT, **QUICK
        )
    assert len(list((tmp_path / "out" / "images").iterdir())) == LIMIT // 2  # host 0's share: edits 0, 2, 4


def test_plan_spreads_a_group_over_hosts_with_one_per_device_batch():
    # 10 edits, batch 4 per device, 2 devices, 2 hosts: calls of 8; host 0 gets 0, 2, ..., 8 in one call.
    assert parallel.plan_calls(10, batch_size=4, devices=2, hosts=2, host=0) == (8, [[0, 2, 4, 6, 8]])
    assert parallel.plan_calls(10, batch_size=4, devices=2, hosts=2, host=1) == (8, [[1, 3, 5, 7, 9]])
    # One device, one host: calls of 4 (the last one short; the caller pads it).
    assert parallel.plan_calls(10, batch_size=4, devices=1) == (4, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    # A group smaller than the batch: the per-device batch is the group's size, whatever the devices.
    assert parallel.plan_calls(3, batch_size=8, devices=1) == (3, [[0, 1, 2]])
    assert parallel.plan_calls(3, batch_size=8, devices=8) == (24, [[0, 1, 2]])
    # More hosts than edits: some hosts have nothing to do.
    assert parallel.plan_calls(1, batch_size=8, devices=1, hosts=2, host=1) == (1, [])
    with pytest.raises(ValueError, match="host 2 of 2"):
        parallel.plan_calls(4, batch_size=1, devices=1, hosts=2, host=2)


def test_incomplete_multi_host_flags_are_one_line_errors(tmp_path, capsys):
    base = ["--model", "m", "--benchmark", "synthetic_edit", "--data-dir", "d", "--out", str(tmp_path / "o")]
    assert ev.main([*base, "--num-processes", "2", "--process-id", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --coordinator-address, --num-processes and --process-id go together"
    ]
    assert (
        ev.main([*base, "--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"])
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == ["error: --process-id must be in 0..1; got 2"]
    assert not (tmp_path / "o").exists()
