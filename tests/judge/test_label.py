"""The label CLI: manifest checks, dry run, outputs, crash-resume, secrecy and throughput."""

import base64
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge.chat_server import FAKE_KEY, Reply, make_images, write_manifest
from PIL import Image

from rewardedit_jax.label import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_args(server, manifest, out, *extra) -> list[str]:
    return [
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--base-url",
        server.base_url,
        "--model",
        "judge-model-x",
        "--backoff-base",
        "0.01",
        *extra,
    ]


def spawn_cli(args: list[str], log_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardedit_jax.label", *args],
        cwd=REPO_ROOT,
        stdout=open(log_dir / "stdout.log", "a"),
        stderr=open(log_dir / "stderr.log", "a"),
    )


def files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "edits.jsonl"
    write_manifest(path, make_images(tmp_path / "img", 6))
    return path


# --- manifest and setup errors ---------------------------------------------------------------------


GOOD = {"id": "e0000", "source": "img/0000_src.png", "edited": "img/0000_edit.png", "instruction": "a"}


def _line(**changes) -> str:
    record = {k: v for k, v in (GOOD | changes).items() if v is not None}
    return json.dumps(record)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "edits.jsonl:2: not valid JSON"),
        ('["a", "b"]', "edits.jsonl:2: expected a JSON object"),
        (_line(id="x", instruction=None), "edits.jsonl:2: missing field 'instruction'"),
        (_line(id="x", source="img/nope.png"), "edits.jsonl:2: source image not found: img/nope.png"),
        (_line(), "edits.jsonl:2: duplicate id 'e0000' (first on line 1)"),
        (_line(id="x", instruction=" "), "edits.jsonl:2: 'instruction' must be a non-empty string"),
    ],
)
def test_bad_manifest_is_a_one_line_error_naming_the_line_before_any_request(
    tmp_path, judge_server, fake_key, capsys, line, problem
):
    make_images(tmp_path / "img", 1)
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text(_line() + "\n" + line + "\n")
    assert main(cli_args(judge_server, manifest, tmp_path / "out.json", "--no-progress")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and problem in err
    assert judge_server.requests == []
    assert not (tmp_path / "out.json").exists()


def test_missing_manifest_and_missing_key_are_one_line_errors(
    tmp_path, judge_server, manifest, monkeypatch, capsys
):
    assert main(cli_args(judge_server, tmp_path / "nope.jsonl", tmp_path / "o.json")) == 2
    assert capsys.readouterr().err == f"error: manifest not found: {tmp_path / 'nope.jsonl'}\n"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(cli_args(judge_server, manifest, tmp_path / "o.json")) == 2
    assert capsys.readouterr().err == "error: no API key: set OPENAI_API_KEY (or use --dry-run)\n"
    assert judge_server.requests == []


def test_unusable_cache_or_prompts_are_one_line_errors(tmp_path, judge_server, manifest, fake_key, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(cli_args(judge_server, manifest, tmp_path / "o.json", "--cache", str(folder))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cache {folder}: ") and err.count("\n") == 1
    assert main(cli_args(judge_server, manifest, tmp_path / "o.json", "--prompts", "v0")) == 2
    assert capsys.readouterr().err.startswith("error: unknown prompt version 'v0'")
    assert judge_server.requests == []


def test_max_side_flag_sets_the_size_of_the_images_sent(tmp_path, judge_server, manifest, fake_key):
    assert (
        main(cli_args(judge_server, manifest, tmp_path / "o.json", "--max-side", "16", "--no-progress")) == 0
    )
    payload = judge_server.requests[0].image_urls[0].split(",", 1)[1]
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (16, 11)  # from 24x16


# --- dry run ---------------------------------------------------------------------------------------


def test_dry_run_prints_request_count_and_cost_and_sends_nothing(
    tmp_path, judge_server, manifest, monkeypatch, capsys
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # not needed for a dry run
    out = tmp_path / "out.json"
    assert (
        main(cli_args(judge_server, manifest, out, "--dry-run", "--price-input", "5", "--price-output", "15"))
        == 0
    )
    printed = capsys.readouterr().out
    assert "6 edits x 3 perspectives = 18 requests; 0 already answered" in printed and "18 to send" in printed
    assert "estimated cost: $" in printed and "$5.00 / $15.00 per 1M" in printed
    assert judge_server.requests == [] and not out.exists()
    assert not (tmp_path / "out.cache.sqlite").exists()


def test_dry_run_after_a_run_counts_cached_requests(tmp_path, judge_server, manifest, fake_key, capsys):
    out = tmp_path / "out.json"
    assert main(cli_args(judge_server, manifest, out, "--no-progress")) == 0
    capsys.readouterr()
    assert main(cli_args(judge_server, manifest, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert "18 already answered" in printed and ", 0 to send" in printed


# --- outputs ---------------------------------------------------------------------------------------


def test_output_is_in_rewardedit_schema_and_failures_go_to_their_own_file(
    tmp_path, judge_server, manifest, fake_key
):
    def script(request):
        if request.instruction == "make item 1 blue" and request.perspective == "preserving":
            return Reply(status=500)
        if request.instruction == "make item 2 blue" and request.perspective == "quality":
            return Reply(content="Looks fine to me.")
        return None

    judge_server.script = script
    out = tmp_path / "labels" / "OUT.json"
    assert main(cli_args(judge_server, manifest, out, "--max-attempts", "2", "--no-progress")) == 1
    rewards = json.loads(out.read_text())
    assert list(rewards) == ["e0000", "e0003", "e0004", "e0005"]  # manifest order, complete items only
    assert rewards["e0000"] == [
        {"Score": 4, "Negative Prompt": "following: make item 0 blue"},
        {"Score": 4, "Negative Prompt": "preserving: make item 0 blue"},
        {"Score": 4, "Negative Prompt": "None"},
    ]
    failures = [json.loads(line) for line in (out.parent / "OUT.failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["e0001", "e0002"]
    assert list(failures[0]["failed"]) == ["preserving"]
    assert "HTTP 500" in failures[0]["failed"]["preserving"]["reason"]
    assert failures[1]["failed"]["quality"] == {
        "reason": "unparseable answer: no JSON object or dict in the answer",
        "raw": "Looks fine to me.",
    }
    assert failures[1]["instruction"] == "make item 2 blue" and failures[1]["source"].endswith("0002_src.png")
    # Only the two failed requests are sent again by a rerun (the unparseable answer is cached: paid for).
    judge_server.script = None
    judge_server.reset()
    assert main(cli_args(judge_server, manifest, out, "--no-progress")) == 1
    assert [(r.instruction, r.perspective) for r in judge_server.requests] == [
        ("make item 1 blue", "preserving")
    ]
    assert main(cli_args(judge_server, manifest, out, "--no-progress", "--retry-unparsed")) == 0
    assert len(json.loads(out.read_text())) == 6
    assert (out.parent / "OUT.failures.jsonl").read_text() == ""


# --- crash and resume --------------------------------------------------------------------------------


def test_killed_run_resumes_without_resending_finished_requests_and_matches_an_uninterrupted_run(
    tmp_path, judge_server, fake_key
):
    n_items, concurrency = 40, 4
    manifest = tmp_path / "edits.jsonl"
    write_manifest(manifest, make_images(tmp_path / "img", n_items))
    judge_server.latency_s = 0.05
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / "OUT.json"
    args = cli_args(judge_server, manifest, out, "--concurrency", str(concurrency), "-v")

    process = spawn_cli(args, run_dir)
    deadline = time.monotonic() + 30
    while len(judge_server.requests) < 45 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    first_run_requests = len(judge_server.requests)
    assert not out.exists()

    with sqlite3.connect(run_dir / "OUT.cache.sqlite") as db:
        finished = set(db.execute("SELECT instruction, perspective FROM answers").fetchall())
    assert all(instruction for instruction, _ in finished)  # every label prompt shows the instruction
    assert 30 <= len(finished) < 3 * n_items
    # Lost with the process: at most the requests that were in flight when it died.
    assert first_run_requests - len(finished) <= concurrency

    judge_server.reset()
    resumed = spawn_cli(args, run_dir)
    assert resumed.wait(timeout=60) == 0
    resent = [key for key in finished if judge_server.counts[key]]
    assert resent == [], f"finished requests sent again: {resent}"
    assert len(judge_server.requests) == 3 * n_items - len(finished)
    assert judge_server.max_in_flight <= concurrency

    reference = tmp_path / "reference" / "OUT.json"
    assert (
        main(cli_args(judge_server, manifest, reference, "--concurrency", str(concurrency), "--no-progress"))
        == 0
    )
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert out.read_bytes() == reference.read_bytes()
    assert files_containing(tmp_path, FAKE_KEY) == []


# --- secrets ----------------------------------------------------------------------------------------


def test_api_key_appears_in_no_file_the_run_wrote(tmp_path, judge_server, fake_key):
    """A hostile server echoes the Authorization header in error bodies and in answers."""

    def script(request):
        auth = request.headers["authorization"]
        if request.perspective == "following":
            return Reply(status=500, body={"error": {"message": f"upstream rejected {auth}"}})
        if request.perspective == "quality":
            return Reply(content=f"cannot judge; your header was {auth}")
        return None

    judge_server.script = script
    manifest = tmp_path / "edits.jsonl"
    write_manifest(manifest, make_images(tmp_path / "img", 3))
    out = tmp_path / "run" / "OUT.json"
    (tmp_path / "run").mkdir()
    process = spawn_cli(cli_args(judge_server, manifest, out, "--max-attempts", "2", "-v"), tmp_path / "run")
    assert process.wait(timeout=60) == 1
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert written == ["OUT.cache.sqlite", "OUT.failures.jsonl", "OUT.json", "stderr.log", "stdout.log"]
    assert json.loads(out.read_text()) == {}  # every edit failed one perspective
    assert "[REDACTED]" in (tmp_path / "run" / "OUT.failures.jsonl").read_text()
    assert "retrying" in (tmp_path / "run" / "stderr.log").read_text()  # -v logged the retries
    assert files_containing(tmp_path, FAKE_KEY) == []
    assert files_containing(tmp_path, FAKE_KEY[8:]) == []  # not even a fragment


# --- throughput -------------------------------------------------------------------------------------


def test_throughput_500_items_at_200ms_latency_is_close_to_the_concurrency_bound(
    tmp_path, judge_server, fake_key, capsys
):
    n_items, latency, concurrency = 500, 0.2, 64
    ideal = 3 * n_items * latency / concurrency  # 4.69 s
    # 8.1 s. The fixed 2 s: start-up (hashing 1000 images, the first request alone while the response
    # format is confirmed) and the tail. The 30%: at 320 requests/s the client and this in-process server
    # need about one CPU core (openai/httpx cost ~2-3 ms per request). Measured on a quiet 2-core machine:
    # 5.5-6.5 s. A run at a third of the concurrency would take 14 s; a serial one 300 s.
    bound = 1.3 * ideal + 2.0
    manifest = tmp_path / "edits.jsonl"
    write_manifest(manifest, make_images(tmp_path / "img", n_items))
    judge_server.latency_s = latency

    def timed_run(out: Path) -> float:
        judge_server.reset()
        started = time.monotonic()
        code = main(cli_args(judge_server, manifest, out, "--concurrency", str(concurrency)))
        elapsed = time.monotonic() - started
        assert code == 0
        assert len(json.loads(out.read_text())) == n_items
        assert len(judge_server.requests) == 3 * n_items
        assert judge_server.max_in_flight <= concurrency
        progress = capsys.readouterr().err
        assert f"done={n_items}, failed=0, cost=$" in progress  # the progress bar's postfix
        with capsys.disabled():
            print(
                f"\nthroughput: {n_items} items, concurrency {concurrency}, latency {latency} s: "
                f"{elapsed:.2f} s (ideal {ideal:.2f} s, bound {bound:.2f} s, max in flight "
                f"{judge_server.max_in_flight}, load average {os.getloadavg()[0]:.1f})"
            )
        return elapsed

    elapsed = timed_run(tmp_path / "first" / "out.json")
    if elapsed >= bound:  # a load spike from other jobs on a shared machine: measure once more
        elapsed = timed_run(tmp_path / "second" / "out.json")
    load = os.getloadavg()[0]
    if elapsed >= bound and load > 1.5 * (os.cpu_count() or 1):
        pytest.skip(f"machine overloaded (load average {load:.1f}): {elapsed:.2f} s against {bound:.2f} s")
    assert elapsed < bound, f"{elapsed:.2f} s > bound {bound:.2f} s"
