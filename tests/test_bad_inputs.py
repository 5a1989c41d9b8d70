"""Every command's bad input is one line naming the input and the problem, exit status 2, before any work.

A table of bad inputs per command (README, "Exit status"): unknown and mistyped config keys, missing files
and folders, unreadable images, bad reward strings, outputs that cannot be written. Most run in this
process through the command's ``main(argv)``, with the loaders the command would reach next replaced by
ones that fail the test, so "before any work" is checked, not assumed; a few run the real command in a
new process, without ``JAX_PLATFORMS``, to show that what a user sees is that one line and no line of
jax probing for backends (libtpu is installed in the test environment: without the package's guard jax
would try to start a TPU on every run).

The tests run as root, for whom no folder is read-only: an output that cannot be written is a path under
a regular file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

from rewardedit_jax import hub

REPO = Path(__file__).resolve().parents[1]
# What jax and libtpu print when they probe for a backend that is not there.
PROBING = ("Unable to initialize backend", "TPU", "platform", "libtpu")


class LoadedAnyway(AssertionError):
    """Raised by the stand-in of a loader that a bad input must never reach."""


def _never(what: str):
    def called(*args, **kwargs):
        raise LoadedAnyway(f"{what} was called although the input was bad")

    return called


def assert_one_line_error(status: int, stderr: str, *names: str) -> str:
    """Exit status 2; stderr's last line is ``error: ...`` naming each of ``names``; no traceback."""
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    for name in names:
        assert name in lines[-1], (name, lines[-1])
    return lines[-1]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Inputs good and bad: a PNG, a text file named .png, a PNG cut in half, a regular file to put
    outputs under, an empty model folder, a data_dir where synthetic_edit/tiny looks built."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    found = {
        "png": tmp_path / "ok.png",
        "text_png": tmp_path / "notes.png",
        "truncated_png": tmp_path / "cut.png",
        "file": tmp_path / "a_file",
        "model": tmp_path / "model",
        "data": tmp_path / "data",
    }
    found["png"].write_bytes(buffer.getvalue())
    found["text_png"].write_text("not an image\n")
    found["truncated_png"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    found["file"].write_text("a regular file\n")
    found["model"].mkdir()
    built = found["data"] / "synthetic_edit" / "tiny" / "1.0.0"
    built.mkdir(parents=True)
    (built / "dataset_info.json").write_text("{}")
    return found


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline: a Hub id resolves to nothing, without the network."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_RESOLVED", {})
    return cache


# --- in this process -------------------------------------------------------------------------------------


def _table(text: str) -> list[tuple[str, str, list[str]]]:
    rows = [line.split(" | ") for line in text.strip().splitlines()]
    return [(case.strip(), args, names.split("; ")) for case, args, names in rows]


# One case a line: its name | the arguments, with {png} {text_png} {truncated_png} {file} {model} {data}
# {tmp} filled in | what the error line must hold, "; "-separated. Every case also leaves {tmp}/out
# uncreated.
EDIT_CASES = _table("""
    text file named .png | --image {text_png} | {text_png}; cannot read the image (not an image file
    truncated PNG | --image {truncated_png} | {truncated_png}; cannot read the image
    missing image | --image {tmp}/none.png | {tmp}/none.png; no such image file
    missing model | --image {png} --model {tmp}/none | {tmp}/none; no such model folder
    two scores | --image {png} --reward 5,5 | --reward; '5,5'
    words | --image {png} --reward a,b,c | --reward; 'a,b,c'
    score above 5 | --image {png} --reward 6,5,5 | --reward; in 0..5; '6,5,5'
    bad low reward | --image {png} --reward-guidance 2 --low-reward 1,1 | --low-reward; '1,1'
    out under a file | --image {png} --out {file}/e.png | {file}/e.png; is a file, not a folder
""")
EVALUATE_CASES = _table("""
    missing model | --model {tmp}/none | {tmp}/none; no such model folder
    missing data dir | --data-dir {tmp}/none | {tmp}/none; no such data folder
    two scores | --reward 5,5 | --reward; '5,5'
    words | --reward a,b,c | --reward; 'a,b,c'
    score above 5 | --reward 6,5,5 | --reward; in 0..5; '6,5,5'
    out under a file | --out {file}/out | --out {file}/out; is a file, not a folder
    missing CLIP folder | --clip-model {tmp}/none | {tmp}/none; no such CLIP model folder
    missing DINO folder | --dino-model {tmp}/none | {tmp}/none; no such DINO model folder
    missing CLIP Hub id | --clip-model owner/none | --clip-model owner/none; HF_HUB_OFFLINE=1
    missing model Hub id | --model owner/none@v1 | owner/none@v1; not in the local Hugging Face
""")
CONVERT_CASES = _table("""
    import: missing source | import {tmp}/none {tmp}/out | {tmp}/none; no such model folder
    import: DST under a file | import {model} {file}/out | DST {file}/out; is a file, not a folder
    export: DST under a file | export {model} {file}/out | DST {file}/out; is a file, not a folder
    export: missing source | export {tmp}/none {tmp}/out | {tmp}/none; no such model folder
    check: missing source | check {tmp}/none | {tmp}/none; no such model folder
    import: missing Hub id | import owner/none {tmp}/out | owner/none; HF_HUB_OFFLINE=1
""")
LABEL_CASES = _table("""
    missing manifest | --manifest {tmp}/none.jsonl | {tmp}/none.jsonl; manifest not found
    text file named .png | --source {text_png} | :1: source image; not an image file
    truncated PNG | --edited {truncated_png} | :1: edited image; cannot read the image
    out under a file | --out {file}/rewards.json | --out {file}/rewards.json; is a file, not a
    cache under a file | --cache {file}/c.sqlite | --cache {file}/c.sqlite; is a file, not a
    out is a folder | --out {model} | --out {model}; is a folder; give a file name
    not JSON | --manifest-text {{nope | :1: not valid JSON
""")
PRECOMPUTE_CASES = _table("""
    out under a file | --out {file}/cache | --out {file}/cache; is a file, not a folder
    missing data dir | --data-dir {tmp}/none | {tmp}/none; build it with tfds build
""")

DEMO_CASES = _table("""
    out under a file | --out {file}/out | --out {file}/out; is a file, not a folder
    unknown data config | --data-config nope | --data-config nope; not a synthetic_edit config; tiny
""")


def _fill(text: str, files: dict[str, Path], tmp_path: Path) -> str:
    return text.format(tmp=tmp_path, **files)


def _argv(text: str, files, tmp_path) -> list[str]:
    return _fill(text, files, tmp_path).split()


def _override(defaults: dict[str, str], argv: list[str]) -> list[str]:
    """``defaults`` (flag -> value) with the flags of ``argv`` replacing theirs, then argv's others."""
    given = dict(zip(argv[::2], argv[1::2]))
    merged = {**defaults, **given}
    return [part for flag, value in merged.items() for part in (flag, value)]


def _check(capsys, status: int, names: list[str], files, tmp_path) -> None:
    captured = capsys.readouterr()
    assert_one_line_error(status, captured.err, *(_fill(n, files, tmp_path) for n in names))
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, args, names", EDIT_CASES, ids=[c[0] for c in EDIT_CASES])
def test_edit(case, args, names, files, tmp_path, monkeypatch, capsys):
    from rewardedit_jax import edit

    monkeypatch.setattr("rewardedit_jax.convert.load_pipeline", _never("load_pipeline"))
    defaults = {
        "--model": str(files["model"]),
        "--instruction": "x",
        "--out": str(tmp_path / "out" / "e.png"),
    }
    status = edit.main(_override(defaults, _argv(args, files, tmp_path)))
    _check(capsys, status, names, files, tmp_path)


@pytest.mark.parametrize("case, args, names", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate(case, args, names, files, tmp_path, offline_hub, monkeypatch, capsys):
    from rewardedit_jax.evaluate import main

    monkeypatch.setattr("rewardedit_jax.convert.load_pipeline", _never("load_pipeline"))
    monkeypatch.setattr("rewardedit_jax.data.load_data_source", _never("the benchmark's records"))
    defaults = {
        "--model": str(files["model"]),
        "--benchmark": "synthetic_edit/tiny",
        "--data-dir": str(files["data"]),
        "--out": str(tmp_path / "out"),
        "--judge": "none",
    }
    status = main([*_override(defaults, _argv(args, files, tmp_path)), "--no-progress"])
    _check(capsys, status, names, files, tmp_path)


@pytest.mark.parametrize("case, args, names", CONVERT_CASES, ids=[c[0] for c in CONVERT_CASES])
def test_convert(case, args, names, files, tmp_path, offline_hub, monkeypatch, capsys):
    from rewardedit_jax.convert import cli, pipeline

    for name in ("import_folder", "export_folder", "load_model_component"):
        monkeypatch.setattr(pipeline, name, _never(name))
    status = cli.main(_argv(args, files, tmp_path))
    _check(capsys, status, names, files, tmp_path)


@pytest.mark.parametrize("case, args, names", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_label(case, args, names, files, tmp_path, monkeypatch, capsys):
    """Not a request is sent (the judge is never made), and no output, cache or failures file is written."""
    from rewardedit_jax import label

    monkeypatch.setattr(label, "Judge", _never("the judge"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    given = dict(zip(*[iter(_argv(args, files, tmp_path))] * 2))
    record = {"id": "a", "source": given.pop("--source", str(files["png"]))}
    record.update(edited=given.pop("--edited", str(files["png"])), instruction="make it red")
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text(given.pop("--manifest-text", json.dumps(record)) + "\n")
    defaults = {"--manifest": str(manifest), "--out": str(tmp_path / "out" / "rewards.json")}
    status = label.main([*_override(defaults, [p for kv in given.items() for p in kv]), "--no-progress"])
    _check(capsys, status, names, files, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["edits.jsonl", *(p.name for p in files.values())]
    )


@pytest.mark.parametrize("case, args, names", PRECOMPUTE_CASES, ids=[c[0] for c in PRECOMPUTE_CASES])
def test_precompute(case, args, names, files, tmp_path, monkeypatch, capsys):
    from rewardedit_jax.data import latent_cache
    from rewardedit_jax.data.precompute import main

    monkeypatch.setattr(latent_cache, "_load_encoders", _never("the encoders"))
    defaults = {
        "--model": str(files["model"]),
        "--dataset": "synthetic_edit/tiny",
        "--data-dir": str(files["data"]),
        "--out": str(tmp_path / "out"),
    }
    status = main([*_override(defaults, _argv(args, files, tmp_path)), "--no-progress"])
    _check(capsys, status, names, files, tmp_path)


@pytest.mark.parametrize("case, args, names", DEMO_CASES, ids=[c[0] for c in DEMO_CASES])
def test_demo(case, args, names, files, tmp_path, monkeypatch, capsys):
    from rewardedit_jax import demo

    monkeypatch.setattr(demo, "build_dataset", _never("the dataset build"))
    status = demo.main(_override({"--out": str(tmp_path / "out")}, _argv(args, files, tmp_path)))
    _check(capsys, status, names, files, tmp_path)


# --- the real commands, in new processes -----------------------------------------------------------------

# (case, module and arguments, the names the error line must hold); each leaves {tmp}/out uncreated.
TRAIN = "rewardedit_jax.train --config configs/demo.py --workdir {tmp}/out"
COMMANDS = [
    (
        "train: mistyped key",
        TRAIN + " --config.learnin_rate=1e-4",
        ["--config.learnin_rate=1e-4", "'learning_rate'"],
    ),
    ("train: mistyped value", TRAIN + " --config.learning_rate=abc", ["--config.learning_rate=abc", "'abc'"]),
    (
        "train: missing data dir",
        TRAIN + " --config.data.data_dir={tmp}/none",
        ["{tmp}/none", "no such data folder"],
    ),
    (
        "train: workdir under a file",
        "rewardedit_jax.train --config configs/demo.py --workdir {file}/out",
        ["--workdir {file}/out", "is a file, not a folder"],
    ),
    (
        "aot: json under a file",
        "rewardedit_jax.aot --config configs/demo.py --json {file}/out.json",
        ["--json {file}/out.json", "is a file, not a folder"],
    ),
    (
        "edit: text file named .png",
        "rewardedit_jax.edit --model {model} --image {text_png} --instruction x --out {tmp}/out/e.png",
        ["{text_png}", "cannot read the image"],
    ),
    (
        "evaluate: out under a file",
        "rewardedit_jax.evaluate --model {model} --benchmark synthetic_edit --data-dir {data} --out {file}/o",
        ["--out {file}/o", "is a file, not a folder"],
    ),
    (
        "convert: missing source",
        "rewardedit_jax.convert check {tmp}/none",
        ["{tmp}/none", "no such model folder"],
    ),
]


@pytest.mark.parametrize("case, command, names", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_command_prints_one_line_and_no_backend_probing(case, command, names, files, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_PLATFORMS", "HF_"))}
    env.update(
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        TFDS_DATA_DIR=str(files["data"]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", *_argv(command, files, tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    line = assert_one_line_error(proc.returncode, proc.stderr, *(_fill(n, files, tmp_path) for n in names))
    noise = [
        text for text in proc.stderr.splitlines() if text != line and any(word in text for word in PROBING)
    ]
    assert noise == [], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
