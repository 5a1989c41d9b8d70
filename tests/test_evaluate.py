"""``python -m rewardedit_jax.evaluate`` end to end on tiny benchmarks and a tiny random IP2P pipeline."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_sd import save_tiny_tokenizer
from fixtures_train import save_small_checkpoints
from PIL import Image

from rewardedit_jax import evaluate as ev
from rewardedit_jax.data import synthetic

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny models: compile time dominates on CPU
CONTRACT_KEYS = {
    "n",
    "failed",
    "following_yes",
    "following_score",
    "preserving_yes",
    "preserving_score",
    "quality_yes",
    "quality_score",
}
LIMIT = 6
QUICK = dict(steps=2, compiler_options=FAST_COMPILE, progress=False, log=None)
ORACLE = dict(judge="oracle", batch_size=4, limit=LIMIT, **QUICK)  # the first 6 edits, batches of 4 + 2


@pytest.fixture(scope="module")
def oracle_run(tiny_pipeline_dir, synthetic_data_dir, tmp_path_factory):
    """The first evaluation of the first 6 synthetic edits with the oracle judge: (out, results)."""
    out = tmp_path_factory.mktemp("evaluate_oracle") / "run"
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **ORACLE)
    return out, results


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_oracle_evaluation_writes_results_json_and_report(oracle_run):
    out, results = oracle_run
    assert json.loads((out / "results.json").read_text()) == results
    assert set(results) >= {"overall", "by_edit_type", "config"}
    blocks = [results["overall"], *results["by_edit_type"].values()]
    for block in blocks:
        assert set(block) >= CONTRACT_KEYS | {"l1", "l2"}
        for p in ev.PERSPECTIVES:
            assert 0.0 <= block[f"{p}_yes"] <= 1.0 and 0.0 <= block[f"{p}_score"] <= 5.0
        assert 0.0 <= block["l1"] <= 1.0 and 0.0 <= block["l2"] <= block["l1"]
    assert results["overall"]["n"] == LIMIT and results["overall"]["failed"] == 0
    assert sum(b["n"] for b in results["by_edit_type"].values()) == LIMIT
    config = results["config"]
    assert config["benchmark"] == f"synthetic_edit/tiny/{synthetic.DATASET_VERSION}"
    assert config["judge"] == "oracle"
    assert config["generation"]["steps"] == 2 and config["generation"]["seed"] == 42
    assert config["generation"]["resolution"] is None  # native size
    assert config["yes_threshold"] == 4.0 and config["reward_condition"] is None  # a stock model
    assert {"jax", "flax", "rewardedit_jax"} <= set(config["versions"])
    assert (
        results["run"]["generated"] == LIMIT and results["run"]["compilations"] == 1
    )  # batches 4 + 2 (padded)

    images = sorted((out / "images").iterdir())
    assert len(images) == LIMIT
    for path in images:
        with Image.open(path) as image:
            assert image.size == (32, 32)  # the native size of synthetic_edit/tiny
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == LIMIT and {j["judge"] for j in judgments} == {"oracle"}
    assert {j["index"] for j in judgments} == set(range(LIMIT))
    grids = {p.name for p in (out / "grids").iterdir()}
    assert grids == {f"{t}.png" for t in results["by_edit_type"]}

    html = (out / "report.html").read_text()
    for path in images:
        assert f'src="images/{path.name}"' in html
        assert f'src="inputs/{path.name}"' in html and f'src="targets/{path.name}"' in html
    for edit_type in results["by_edit_type"]:
        assert f'href="grids/{edit_type}.png"' in html
    first = judgments[0]
    assert f"{first['following']['score']:.1f}" in html
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_rerun_reuses_every_edit_and_judgment_without_loading_the_model(
    oracle_run, tiny_pipeline_dir, synthetic_data_dir, monkeypatch, capsys
):
    out, first = oracle_run
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}

    def no_model(*args, **kwargs):
        raise AssertionError("the rerun loaded the model")

    monkeypatch.setattr("rewardedit_jax.convert.load_pipeline", no_model)
    argv = [
        "--model",
        str(tiny_pipeline_dir),
        "--benchmark",
        "synthetic_edit/tiny",
        "--data-dir",
        str(synthetic_data_dir),
    ]
    argv += [
        "--out",
        str(out),
        "--judge",
        "oracle",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--limit",
        str(LIMIT),
    ]
    start = time.perf_counter()
    assert ev.main(argv) == 0, capsys.readouterr().err
    seconds = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    run = results["run"]
    assert run["generated"] == 0 and run["compilations"] == 0 and run["reused_images"] == LIMIT
    assert run["judged"] == 0 and run["reused_judgments"] == LIMIT
    assert {k: v for k, v in results.items() if k != "run"} == {k: v for k, v in first.items() if k != "run"}
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes
    assert len(read_jsonl(out / "judgments.jsonl")) == LIMIT  # nothing judged twice
    print(f"rerun of {LIMIT} edits: {seconds:.2f} s (first run {first['run']['seconds']:.1f} s)")
    assert seconds < 10.0


def test_a_deleted_edit_is_generated_and_judged_again(
    oracle_run, tiny_pipeline_dir, synthetic_data_dir, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(oracle_run[0], out)
    victim = sorted((out / "images").iterdir())[2]
    victim.unlink()
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **ORACLE)
    run = results["run"]
    assert run["generated"] == 1 and run["reused_images"] == LIMIT - 1
    assert victim.is_file()
    # Same seed and model: the same edit up to float rounding (a batch of 1 instead of 4), so its judgment is
    # normally found again by hash; if rounding changed a pixel, it is judged again.
    assert run["judged"] + run["reused_judgments"] == LIMIT and run["judged"] <= 1
    lines = len(read_jsonl(out / "judgments.jsonl"))
    assert lines == LIMIT + run["judged"]
    images = sorted((out / "images").iterdir())
    assert images[0].read_bytes() != victim.read_bytes()
    victim.write_bytes(images[0].read_bytes())
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **ORACLE)
    # A changed image is judged again.
    assert results["run"]["generated"] == 0 and results["run"]["judged"] == 1
    assert len(read_jsonl(out / "judgments.jsonl")) == lines + 1


def test_other_generation_settings_in_the_same_folder_are_refused(
    oracle_run, tiny_pipeline_dir, synthetic_data_dir
):
    out = oracle_run[0]
    with pytest.raises(ev.EvaluationError, match=r"other settings \(steps 2 -> 3\)"):
        ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **{**QUICK, "steps": 3})


def test_edits_of_an_earlier_checkpoint_of_a_workdir_are_refused(oracle_run, synthetic_data_dir, tmp_path):
    """A training workdir that trained further is another model: its old edits must not be reused."""
    workdir = tmp_path / "workdir"
    (workdir / "model").mkdir(parents=True)
    (workdir / "model" / "rewardedit_model.json").write_text("{}")
    save_small_checkpoints(workdir / "checkpoints", {100})
    out = tmp_path / "out"
    out.mkdir()
    generation = json.loads((oracle_run[0] / "generation.json").read_text())
    generation["requested"].update(model=str(workdir.resolve()), model_step=100)
    (out / "generation.json").write_text(json.dumps(generation))
    save_small_checkpoints(workdir / "checkpoints", {200})  # trained on since
    with pytest.raises(ev.EvaluationError, match=r"other settings \(model_step 100 -> 200\)"):
        ev.evaluate(workdir, "synthetic_edit", synthetic_data_dir, out, **ORACLE)
    # A named checkpoint is that step.
    with pytest.raises(ev.EvaluationError, match=r"model .* -> .*checkpoints/200'; model_step 100 -> 200"):
        ev.evaluate(workdir / "checkpoints" / "200", "synthetic_edit", synthetic_data_dir, out, **ORACLE)


def test_two_image_sizes_compile_exactly_twice(tiny_pipeline_dir, real_edit_data_dir, tmp_path):
    from rewardedit_jax.sampling import load_edit_image

    data_dir, manual = real_edit_data_dir
    out = tmp_path / "real"
    kwargs = {**QUICK, "steps": 1}  # 128x64 is slow to sample on a shared CPU
    results = ev.evaluate(
        tiny_pipeline_dir, "real_edit", data_dir, out, judge="none", resolution=64, batch_size=2, **kwargs
    )
    # wide: 1 edit at 128x64, square: 2 edits at 64x64 (one batch each size; the padding of a partial batch
    # is covered by the oracle run: 6 edits in batches of 4 compile once).
    assert results["run"]["compilations"] == 2 and results["run"]["generated"] == 3
    sizes = {}
    for path in (out / "images").iterdir():
        with Image.open(path) as image:
            sizes[path.name.split("_", 1)[1]] = image.size
    assert sizes == {
        "wide_Local.png": (128, 64),
        "square_Style.png": (64, 64),
        "square_Global.png": (64, 64),
    }
    # The inputs are fitted exactly as `python -m rewardedit_jax.edit` fits them (one file per photo).
    assert sorted(p.name for p in (out / "inputs").iterdir()) == ["square_png.png", "wide_png.png"]
    for name in ("wide", "square"):
        stored = np.asarray(Image.open(out / "inputs" / f"{name}_png.png"))
        np.testing.assert_array_equal(stored, load_edit_image(manual / "Real-Edit" / f"{name}.png", 64))
    assert list(results["by_edit_type"]) == ["Local", "Global", "Style"]  # the paper's order
    for block in [results["overall"], *results["by_edit_type"].values()]:
        assert set(block) == CONTRACT_KEYS  # no judge, no references: no scores, no L1/L2
        assert block["following_yes"] is None and block["failed"] == 0
    assert results["overall"]["n"] == 3
    assert not (out / "judgments.jsonl").exists()
    assert (out / "report.html").is_file() and len(list((out / "grids").iterdir())) == 3


def test_gpt_judge_goes_through_the_judge_api_and_its_cache(
    oracle_run, tiny_pipeline_dir, synthetic_data_dir, tmp_path, judge_server, fake_key
):
    from rewardedit_jax.judge import JudgeConfig

    out = tmp_path / "run"
    shutil.copytree(oracle_run[0], out)
    config = JudgeConfig(model="gpt-4o", base_url=judge_server.base_url, concurrency=4, max_attempts=2)
    kwargs = dict(judge="gpt", judge_config=config, batch_size=4, limit=LIMIT, **QUICK)
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    assert len(judge_server.requests) == 3 * LIMIT  # one request per (edit, perspective)
    overall = results["overall"]
    assert overall["following_yes"] == 1.0 and overall["quality_score"] == 4.5  # the server's answer
    assert overall["failed"] == 0 and overall["n"] == LIMIT and "l1" in overall
    assert results["config"]["judge_model"] == "gpt-4o" and results["run"]["judge"] == "gpt:gpt-4o"
    assert (out / "judge-cache.sqlite").is_file()
    assert sum(j["judge"] == "gpt:gpt-4o" for j in read_jsonl(out / "judgments.jsonl")) == LIMIT
    judge_server.reset()
    again = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    assert judge_server.requests == [] and again["run"]["reused_judgments"] == LIMIT
    assert again["overall"] == results["overall"]
    for path in out.rglob("*"):
        if path.is_file():
            assert fake_key.encode() not in path.read_bytes()


def test_clip_metrics_with_a_local_clip_model(oracle_run, tiny_pipeline_dir, synthetic_data_dir, tmp_path):
    from fixtures_sd import TINY_BOS_ID, TINY_EOS_ID, TINY_VOCAB_SIZE
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    clip_dir = tmp_path / "clip"
    text = dict(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=TINY_BOS_ID,
        eos_token_id=TINY_EOS_ID,
    )
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1)
    vision["num_attention_heads"] = 2
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip_dir
    )
    save_tiny_tokenizer(clip_dir)
    out = tmp_path / "run"
    shutil.copytree(oracle_run[0], out)
    kwargs = dict(judge="none", batch_size=4, limit=LIMIT, clip_model=clip_dir, **QUICK)
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    for block in [results["overall"], *results["by_edit_type"].values()]:
        assert -1.0 <= block["clip_i"] <= 1.0 and -1.0 <= block["clip_t"] <= 1.0
        assert block["following_yes"] is None  # --judge none
    assert len(read_jsonl(out / "metrics.jsonl")) == LIMIT
    again = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    assert again["overall"] == results["overall"] and len(read_jsonl(out / "metrics.jsonl")) == LIMIT
    assert "CLIP-I" in (out / "report.html").read_text()


def test_reference_metrics_with_a_local_dino_model(
    oracle_run, tiny_pipeline_dir, synthetic_data_dir, real_edit_data_dir, tmp_path, capsys
):
    """--dino-model: per-edit DINO similarity (and L1/L2) as PyTorch / numpy compute them on the written
    images, means per edit type in results.json, cached in metrics.jsonl; a bad folder: a one-line error
    before generation."""
    import torch
    from fixtures_metrics import save_tiny_dino
    from transformers import AutoImageProcessor, Dinov2Model

    dino_dir = save_tiny_dino(tmp_path / "dino", "dinov2")
    out = tmp_path / "run"
    shutil.copytree(oracle_run[0], out)
    kwargs = dict(judge="none", batch_size=4, limit=LIMIT, dino_model=dino_dir, **QUICK)
    results = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    assert results["config"]["dino_model"] == str(dino_dir.resolve())
    assert json.loads((out / "results.json").read_text()) == results

    # Each edit's DINO similarity recomputed from the written images with the PyTorch model directly.
    model = Dinov2Model.from_pretrained(str(dino_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(str(dino_dir))
    per_edit = {}
    for name in sorted(p.name for p in (out / "images").iterdir()):
        pair = [
            Image.open(out / "images" / name).convert("RGB"),
            Image.open(out / "targets" / name).convert("RGB"),
        ]
        with torch.no_grad():
            cls = model(**processor(images=pair, return_tensors="pt")).last_hidden_state[:, 0].numpy()
        dino = float(cls[0] @ cls[1] / np.linalg.norm(cls[0]) / np.linalg.norm(cls[1]))
        edited, target = (np.asarray(image, np.float64) / 255 for image in pair)
        per_edit[name] = (dino, np.abs(edited - target).mean(), ((edited - target) ** 2).mean())
    records = {r["index"]: r for r in read_jsonl(out / "metrics.jsonl") if "dino_model" in r}
    assert len(records) == LIMIT
    for name, (dino, _, _) in per_edit.items():
        assert records[int(name[:4])]["dino"] == pytest.approx(dino, abs=1e-5)
    by_type: dict[str, list] = {}
    for edit in ev.Benchmark(
        "synthetic_edit", ev.resolve_benchmark("synthetic_edit", synthetic_data_dir), LIMIT
    ).edits:
        by_type.setdefault(edit.edit_type, []).append(per_edit[f"{edit.name}.png"])
    assert set(results["by_edit_type"]) == set(by_type)
    for edit_type, values in [("overall", list(per_edit.values())), *by_type.items()]:
        block = results["overall"] if edit_type == "overall" else results["by_edit_type"][edit_type]
        for key, column in (("dino", 0), ("l1", 1), ("l2", 2)):
            expected = np.mean([v[column] for v in values])
            assert block[key] == pytest.approx(expected, abs=2e-6), f"{edit_type} {key}"
    assert "DINO" in (out / "report.html").read_text()
    again = ev.evaluate(tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, out, **kwargs)
    assert again["overall"] == results["overall"] and len(read_jsonl(out / "metrics.jsonl")) == LIMIT

    # Through the CLI, a missing or non-DINO folder, or a benchmark without references, fails before anything
    # is generated (no model load, no images).
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    fresh = tmp_path / "fresh"
    common = ["--model", str(tiny_pipeline_dir), "--out", str(fresh), "--judge", "none", "--no-progress"]
    capsys.readouterr()
    synthetic_args = [*common, "--benchmark", "synthetic_edit", "--data-dir", str(synthetic_data_dir)]
    assert ev.main([*synthetic_args, "--dino-model", str(tmp_path / "nope")]) == 2
    assert error_lines(capsys) == [f"error: {(tmp_path / 'nope').resolve()}: no such DINO model folder"]
    assert ev.main([*synthetic_args, "--dino-model", str(tmp_path / "clip")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {(tmp_path / 'clip').resolve()}: not a DINO model (config.json model_type 'clip'"
    )
    real_args = [*common, "--benchmark", "real_edit", "--data-dir", str(real_edit_data_dir[0])]
    assert ev.main([*real_args, "--dino-model", str(dino_dir)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: --dino-model compares edits with reference edits")
    assert not (fresh / "images").exists()


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_user_errors_are_one_line(
    tiny_pipeline_dir, synthetic_data_dir, real_edit_data_dir, tmp_path, capsys, monkeypatch
):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    model = ["--model", str(tiny_pipeline_dir)]

    def run(*args: str) -> int:
        return ev.main(["--out", out, "--no-progress", *args])

    assert run(*model, "--benchmark", "synthetic_edit", "--data-dir", str(empty)) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: synthetic_edit is not built in {empty}; build it")
    assert run(*model, "--benchmark", "real_edit", "--data-dir", str(empty), "--judge", "none") == 2
    assert error_lines(capsys) == [
        f"error: real_edit is not built in {empty}; build it with: tfds build tfds_builders/real_edit "
        f"--data_dir {empty} --file_format array_record"
    ]
    missing = tmp_path / "no-model"
    assert (
        run("--model", str(missing), "--benchmark", "synthetic_edit", "--data-dir", str(synthetic_data_dir))
        == 2
    )
    assert error_lines(capsys) == [f"error: {missing}: no such model folder"]
    real_dir = str(real_edit_data_dir[0])
    assert run(*model, "--benchmark", "real_edit", "--data-dir", real_dir, "--judge", "oracle") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        "error: --judge oracle needs the ground truth of synthetic_edit"
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run(*model, "--benchmark", "real_edit", "--data-dir", real_dir) == 2  # default: gpt
    assert error_lines(capsys) == [
        "error: --judge gpt needs an API key: set OPENAI_API_KEY (or use --judge none)"
    ]
    args = [*model, "--benchmark", "synthetic_edit", "--data-dir", str(synthetic_data_dir)]
    assert run(*args, "--reward", "5,5,5", "--limit", "1") == 2
    lines = error_lines(capsys)
    assert (
        lines[-1] == f"error: {tiny_pipeline_dir} is not a reward model; --reward apply to reward models only"
    )
    assert run(*args, "--reward", "5,5") == 2
    assert "three comma-separated numbers" in error_lines(capsys)[-1]
    assert run(*args, "--reward-guidance", "1", "--limit", "1") == 2
    assert error_lines(capsys)[-1] == (
        f"error: {tiny_pipeline_dir} is not a reward model; --reward-guidance apply to reward models only"
    )
    assert run(*args, "--reward-guidance", "nan") == 2
    assert error_lines(capsys) == ["error: --reward-guidance must be a finite number; got nan"]
    assert run(*args, "--reward-guidance", "1", "--low-reward", "1,1") == 2
    assert error_lines(capsys) == [
        "error: --low-reward must be three comma-separated numbers like 5,5,5; got '1,1'"
    ]
    assert not (tmp_path / "out" / "images").exists()


def test_aggregate_counts_failed_edits_and_averages_the_judged_perspectives():
    edits = [ev.BenchmarkEdit(i, f"e{i}", "x", "add", f"e{i}") for i in range(3)]
    judgments = {
        0: {p: {"answer": "yes", "score": 5.0} for p in ev.PERSPECTIVES},
        1: {
            "following": {"answer": "no", "score": 1.0},
            "preserving": {"answer": "yes", "score": 4.0},
            "failed": {"quality": "unparseable answer"},
        },
    }  # edit 2: no judgment at all
    block = ev.aggregate(edits, judgments, {0: {"l1": 0.1}, 1: {"l1": 0.3}, 2: {}}, judged=True)
    assert block["n"] == 3 and block["failed"] == 2
    assert block["following_yes"] == 0.5 and block["following_score"] == 3.0
    assert block["quality_yes"] == 1.0 and block["quality_score"] == 5.0
    assert block["l1"] == pytest.approx(0.2) and "l2" not in block


def test_grid_lays_out_strips_in_columns():
    from rewardedit_jax.report import make_grid

    strips = [[np.zeros((32, 16, 3), np.uint8), np.full((16, 32, 3), 200, np.uint8)] for _ in range(5)]
    grid = make_grid(strips, cell=64, columns=2, gap=4, margin=10)
    assert grid.shape == (3 * 64 + 4 * 10, 2 * (2 * 64 + 4) + 3 * 10, 3) and grid.dtype == np.uint8
    assert grid[10 + 32, 10 + 32].tolist() == [0, 0, 0]  # the first image, scaled up and centred


def record_sampler_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``EditSampler`` call from now on (the calls still run)."""
    from rewardedit_jax.sampling import EditSampler

    calls = []
    original = EditSampler.__call__

    def recording(self, images, instructions, **kwargs):
        calls.append(kwargs)
        return original(self, images, instructions, **kwargs)

    monkeypatch.setattr(EditSampler, "__call__", recording)
    return calls


def test_reward_model_gets_the_given_condition_and_the_best_for_the_rest(
    tiny_reward_pipeline_dir, synthetic_data_dir, tmp_path, monkeypatch
):
    calls = record_sampler_calls(monkeypatch)
    kwargs = dict(judge="none", batch_size=1, limit=1, **{**QUICK, "steps": 1})
    results = ev.evaluate(
        tiny_reward_pipeline_dir,
        "synthetic_edit",
        synthetic_data_dir,
        tmp_path / "out",
        reward="4,5,3",
        **kwargs,
    )
    # The feedback text was not given: the sampler's best default, recorded as such.
    assert results["config"]["reward_condition"] == {
        "reward": [4.0, 5.0, 3.0],
        "feedback": "None; None; None",
    }
    assert calls == [dict(calls[0], reward_scores=(4.0, 5.0, 3.0), feedback=None)]
    assert results["config"]["generation"]["reward"] == [4.0, 5.0, 3.0]


def test_reward_guidance_reaches_the_sampler_and_is_recorded(
    tiny_reward_pipeline_dir, synthetic_data_dir, tmp_path, monkeypatch
):
    calls = record_sampler_calls(monkeypatch)
    kwargs = dict(judge="none", batch_size=1, limit=1, **{**QUICK, "steps": 1})
    guided = dict(reward_guidance=2.0, low_reward="1,1,1", low_feedback="The image is blurry.")
    results = ev.evaluate(
        tiny_reward_pipeline_dir,
        "synthetic_edit",
        synthetic_data_dir,
        tmp_path / "guided",
        **guided,
        **kwargs,
    )
    assert calls[-1]["reward_guidance"] == 2.0 and calls[-1]["low_reward_scores"] == (1.0, 1.0, 1.0)
    assert calls[-1]["low_feedback"] == "The image is blurry."
    generation = results["config"]["generation"]
    assert (generation["reward_guidance"], generation["low_reward"]) == (2.0, [1.0, 1.0, 1.0])
    assert results["config"]["reward_condition"]["reward_guidance"] == {
        "scale": 2.0,
        "low_reward": [1.0, 1.0, 1.0],
        "low_feedback": "The image is blurry.",
    }
    plain = ev.evaluate(
        tiny_reward_pipeline_dir, "synthetic_edit", synthetic_data_dir, tmp_path / "plain", **kwargs
    )
    assert "reward_guidance" not in calls[-1] and plain["config"]["generation"]["low_reward"] is None
    image = {run: next((tmp_path / run / "images").glob("*.png")).read_bytes() for run in ("guided", "plain")}
    assert image["guided"] != image["plain"]  # the same seed, pushed away from the low-reward branch
    # A folder written before reward guidance existed (no such keys) resumes as an unguided one.
    path = tmp_path / "plain" / "generation.json"
    saved = json.loads(path.read_text())
    for key in ("reward_guidance", "low_reward", "low_feedback"):
        del saved["requested"][key]
    path.write_text(json.dumps(saved))
    again = ev.evaluate(
        tiny_reward_pipeline_dir, "synthetic_edit", synthetic_data_dir, tmp_path / "plain", **kwargs
    )
    assert again["run"]["reused_images"] == 1
    with pytest.raises(ev.EvaluationError, match=r"other settings \(reward_guidance 2.0 -> 3.0\)"):
        ev.evaluate(
            tiny_reward_pipeline_dir,
            "synthetic_edit",
            synthetic_data_dir,
            tmp_path / "guided",
            **{**guided, "reward_guidance": 3.0},
            **kwargs,
        )


def test_edit_i_is_seeded_with_seed_plus_i_unless_the_noise_is_shared(
    tiny_pipeline_dir, synthetic_data_dir, tmp_path, monkeypatch
):
    calls = record_sampler_calls(monkeypatch)

    def seeds() -> list:
        return [np.asarray(c["seed"]).tolist() for c in calls]

    kwargs = dict(judge="none", batch_size=2, limit=3, **{**QUICK, "steps": 1})
    per_edit = ev.evaluate(
        tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, tmp_path / "per_edit", seed=7, **kwargs
    )
    assert seeds() == [[7, 8], [9, 9]]  # the default; the last batch is padded with its last edit
    assert per_edit["config"]["generation"]["seed_per_edit"] is True
    calls.clear()
    ev.evaluate(
        tiny_pipeline_dir,
        "synthetic_edit",
        synthetic_data_dir,
        tmp_path / "one_seed",
        seed=9,
        shared_noise=True,
        **kwargs,
    )
    assert seeds() == [[9, 9], [9, 9]]
    # Edit 2 seeded 7 + 2 is the edit a run seeded 9 makes; edit 0 (seed 7) differs from it.
    names = sorted(p.name for p in (tmp_path / "per_edit" / "images").glob("*.png"))
    image = {
        (run, i): np.asarray(Image.open(tmp_path / run / "images" / names[i]))
        for run in ("per_edit", "one_seed")
        for i in (0, 2)
    }
    np.testing.assert_array_equal(image["per_edit", 2], image["one_seed", 2])
    assert not np.array_equal(image["per_edit", 0], image["one_seed", 0])
    with pytest.raises(ev.EvaluationError, match="seed_per_edit False -> True"):
        ev.evaluate(
            tiny_pipeline_dir, "synthetic_edit", synthetic_data_dir, tmp_path / "one_seed", seed=9, **kwargs
        )
    # The old --seed-per-edit names the default: the same settings, every edit reused.
    again = ev.evaluate(
        tiny_pipeline_dir,
        "synthetic_edit",
        synthetic_data_dir,
        tmp_path / "per_edit",
        seed=7,
        seed_per_edit=True,
        **kwargs,
    )
    assert again["run"]["reused_images"] == 3
    with pytest.raises(ev.EvaluationError, match="--shared-noise and --seed-per-edit contradict"):
        ev.evaluate(
            tiny_pipeline_dir,
            "synthetic_edit",
            synthetic_data_dir,
            tmp_path / "x",
            seed_per_edit=True,
            shared_noise=True,
            **kwargs,
        )
