"""Evaluation during training (config.evals): rows, grids, TensorBoard images, equality with `evaluate`."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from fixtures_events import tensorboard_images, tensorboard_scalars, wandb_history, wandb_run_files
from fixtures_train import cpu_env, run_script, run_two_hosts, tiny_config, train_argv
from PIL import Image

from rewardedit_jax.training import trainer
from rewardedit_jax.training.sharding import ConfigError

PERSPECTIVES = ("following", "preserving", "quality")
SAMPLING = dict(steps=2, num_edits=4, batch_size=4, seed=42, dtype="float32")


def _spy_on_scoring(monkeypatch) -> list[type]:
    """The class of every evaluator that scores edits from now on (the scoring still runs)."""
    from rewardedit_jax import evaluators

    scored = []
    for cls in (evaluators.OracleEvaluator, evaluators.ReferenceEvaluator, evaluators.GptEvaluator):

        def score(self, records, *args, _original=cls.score, **kwargs):
            scored.append(type(self))
            return _original(self, records, *args, **kwargs)

        monkeypatch.setattr(cls, "score", score)
    return scored


TRAINER_SCORED: list[type] = []  # the evaluator classes that scored while the `run` fixture trained


def _evals_config(tokenizer, data_dir, **evals):
    config = tiny_config(tokenizer, data_dir)
    for name, entry in evals.items():
        config.evals[name] = entry
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokenizer, synthetic_data_dir):
    """8 steps (checkpoints at 4 and 8) with an oracle evaluator every 3 steps and a reference one every 4,
    logged to W&B too (offline, in ``run.parent / "wandb"`` when wandb is installed)."""
    workdir = tmp_path_factory.mktemp("evals") / "run"
    config = _evals_config(
        tiny_tokenizer,
        synthetic_data_dir,
        oracle=dict(type="oracle", every_steps=3, data="synthetic_edit/tiny", **SAMPLING),
        ref=dict(type="reference", every_steps=4, data="synthetic_edit/tiny", **SAMPLING),
    )
    config.metrics.wandb.enabled = importlib.util.find_spec("wandb") is not None
    (workdir.parent / "wandb").mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(workdir.parent / "wandb"))
        monkeypatch.setenv("WANDB_SILENT", "true")
        scored = _spy_on_scoring(monkeypatch)
        trainer.train_and_evaluate(config, workdir)
    TRAINER_SCORED[:] = scored
    return workdir


def _rows(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _eval_rows(workdir, name: str) -> dict[int, dict]:
    prefix = f"eval/{name}/"
    return {
        r["step"]: {k[len(prefix) :]: v for k, v in r.items() if k.startswith(prefix)}
        for r in _rows(workdir)
        if any(k.startswith(prefix) for k in r)
    }


def test_evals_write_rows_grids_and_tensorboard_images_at_their_steps(run):
    oracle, ref = _eval_rows(run, "oracle"), _eval_rows(run, "ref")
    assert sorted(oracle) == [3, 6, 8] and sorted(ref) == [4, 8]
    for row in oracle.values():
        for p in PERSPECTIVES:
            assert 0.0 <= row[f"{p}_yes"] <= 1.0 and 0.0 <= row[f"{p}_score"] <= 5.0
        assert row["failed"] == 0 and row["seconds"] > 0
    for row in ref.values():
        assert set(row) == {"failed", "l1", "l2", "seconds"} and 0 < row["l2"] <= row["l1"] < 1
    # the training metrics are still written at every log step
    assert [r["step"] for r in _rows(run) if "learning/loss" in r] == [2, 4, 6, 8]
    for name, steps in (("oracle", [3, 6, 8]), ("ref", [4, 8])):
        for step in steps:
            folder = run / "eval" / str(step) / name
            grid = np.asarray(Image.open(folder / "grid.png").convert("RGB"))
            results = json.loads((folder / "results.json").read_text())
            assert results["step"] == step and len(results["edits"]) == 4
            assert {k: v for k, v in results["overall"].items() if k != "n"}.items() <= _eval_rows(run, name)[
                step
            ].items()
            assert len(list((folder / "images").glob("*.png"))) == 4
            assert len(list((folder / "inputs").glob("*.png"))) == 4
    images = tensorboard_images(run / "tensorboard")
    assert sorted(images) == sorted(
        [("eval/oracle", s) for s in (3, 6, 8)] + [("eval/ref", s) for s in (4, 8)]
    )
    grid = np.asarray(Image.open(run / "eval" / "8" / "oracle" / "grid.png").convert("RGB"))
    np.testing.assert_array_equal(images[("eval/oracle", 8)], grid)
    # source | edit | reference, four strips: not a blank canvas
    assert grid.shape[1] > 3 * 96 * 4 and (grid != 255).mean() > 0.2


def test_training_logs_the_same_scalars_and_grids_to_tensorboard_and_wandb(run):
    expected: dict[int, dict] = {}  # step -> every metrics.jsonl value logged at it
    for row in _rows(run):
        expected.setdefault(row.pop("step"), {}).update(row)
    scalars = tensorboard_scalars(run / "tensorboard")
    assert {(tag, step) for tag, values in scalars.items() for step in values} == {
        (tag, step) for step, row in expected.items() for tag in row
    }
    for tag, values in scalars.items():
        for step, value in values.items():
            assert value == pytest.approx(expected[step][tag], rel=1e-6), (tag, step)  # float32 in events
    grids = tensorboard_images(run / "tensorboard")
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed")
    (run_file,) = wandb_run_files(run.parent / "wandb")
    history = wandb_history(run_file)
    assert sorted(history) == sorted(expected)
    for step, row in expected.items():
        logged = {k: v for k, v in history[step].items() if not k.startswith("_") and not isinstance(v, dict)}
        assert logged == row, step
    assert {(k, step) for step, row in history.items() for k, v in row.items() if isinstance(v, dict)} == set(
        grids
    )
    for (tag, step), grid in grids.items():
        png = run_file.parent / "files" / history[step][tag]["path"]
        np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), grid)


def test_oracle_numbers_equal_the_evaluate_cli_for_the_same_weights(run, tmp_path, synthetic_data_dir):
    from rewardedit_jax.evaluate import evaluate

    results = evaluate(
        run,  # the workdir's latest checkpoint (8): its EMA weights, as the trainer evaluated at step 8
        "synthetic_edit/tiny",
        synthetic_data_dir,
        tmp_path / "cli",
        judge="oracle",
        steps=SAMPLING["steps"],
        seed=SAMPLING["seed"],
        limit=SAMPLING["num_edits"],
        batch_size=SAMPLING["batch_size"],
        dtype="float32",
        progress=False,
        log=None,
    )
    overall = results["overall"]
    oracle, ref = _eval_rows(run, "oracle")[8], _eval_rows(run, "ref")[8]
    for p in PERSPECTIVES:
        assert oracle[f"{p}_yes"] == overall[f"{p}_yes"]
        assert oracle[f"{p}_score"] == overall[f"{p}_score"]
    assert ref["l1"] == overall["l1"] and ref["l2"] == overall["l2"]
    for png in (tmp_path / "cli" / "images").glob("*.png"):
        trained = np.asarray(Image.open(run / "eval" / "8" / "oracle" / "images" / png.name))
        np.testing.assert_array_equal(np.asarray(Image.open(png)), trained)
    judged = json.loads((run / "eval" / "8" / "oracle" / "results.json").read_text())["edits"]
    cli = [json.loads(line) for line in (tmp_path / "cli" / "judgments.jsonl").read_text().splitlines()]
    assert [{p: e["judgment"][p] for p in PERSPECTIVES} for e in judged] == [
        {p: j[p] for p in PERSPECTIVES} for j in sorted(cli, key=lambda j: j["index"])
    ]


def test_the_trainer_and_the_cli_score_with_the_same_evaluator_classes(
    run, tmp_path, synthetic_data_dir, monkeypatch
):
    """The CLI, given the edits the trainer made at step 8, scores them with the classes the trainer used
    and gets the trainer's numbers."""
    from rewardedit_jax import evaluators
    from rewardedit_jax.evaluate import evaluate

    assert set(TRAINER_SCORED) == {evaluators.OracleEvaluator, evaluators.ReferenceEvaluator}
    out = tmp_path / "cli"
    shutil.copytree(run / "eval" / "8" / "oracle" / "images", out / "images")

    def no_model(*args, **kwargs):
        raise AssertionError("every edit is there: nothing to generate")

    monkeypatch.setattr("rewardedit_jax.convert.load_pipeline", no_model)
    cli_scored = _spy_on_scoring(monkeypatch)
    results = evaluate(
        run,
        "synthetic_edit/tiny",
        synthetic_data_dir,
        out,
        judge="oracle",
        steps=SAMPLING["steps"],
        limit=SAMPLING["num_edits"],
        dtype="float32",
        progress=False,
        log=None,
    )
    assert set(cli_scored) == set(TRAINER_SCORED)
    assert results["run"]["generated"] == 0 and results["run"]["judged"] == SAMPLING["num_edits"]
    overall, oracle, ref = results["overall"], _eval_rows(run, "oracle")[8], _eval_rows(run, "ref")[8]
    for key in [f"{p}_{x}" for p in PERSPECTIVES for x in ("yes", "score")]:
        assert overall[key] == oracle[key]
    assert (overall["l1"], overall["l2"]) == (ref["l1"], ref["l2"])


@pytest.mark.parametrize(
    "entry, message",
    [
        (dict(type="bleu", every_steps=2, data="synthetic_edit/tiny"), "config.evals.e.type must be one of"),
        (dict(type="oracle", every_steps=2), "config.evals.e.data is missing"),
        (
            dict(type="oracle", every_steps=0, data="synthetic_edit/tiny"),
            "config.evals.e.every_steps must be",
        ),
        (dict(type="oracle", data="synthetic_edit/tiny"), "config.evals.e.every_steps must be"),
        (dict(type="oracle", every_steps=2, data="real_edit"), "the oracle needs synthetic_edit"),
        (dict(type="oracle", every_steps=2, data="synthetic_edit/tiny", seed="x"), "config.evals.e.seed"),
        (dict(type="oracle", every_steps=2, data="synthetic_edit/tiny", text_guidance="x"), "text_guidance"),
        (dict(type="oracle", every_steps=2, data="synthetic_edit/tiny", stpes=3), "config.evals.e.stpes"),
        (
            dict(type="reference", every_steps=2, data="synthetic_edit/tiny", clip_model="/nonexistent"),
            "clip",
        ),
        (
            dict(type="oracle", every_steps=2, data="synthetic_edit/16px"),
            "config.evals.e.data: synthetic_edit",
        ),
    ],
)
def test_bad_evaluator_configs_fail_in_one_line_before_compilation(
    entry, message, tmp_path, tiny_tokenizer, synthetic_data_dir, monkeypatch
):
    config = _evals_config(tiny_tokenizer, synthetic_data_dir, e=entry)
    compiled = []
    monkeypatch.setattr(trainer.builder, "build_train_step", lambda *a, **k: compiled.append(1))
    with pytest.raises(ConfigError) as e:
        trainer.train_and_evaluate(config, tmp_path / "run")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not compiled


SHARDED_SCRIPT = """
import json, sys
from fixtures_train import cpu_env, run_script, run_two_hosts, tiny_config, train_argv
from rewardedit_jax.training import trainer

config = tiny_config(
    sys.argv[1], sys.argv[2], total_steps=4, checkpoint_every_steps=4, state_layout="conv_ohwi"
)
config.mesh.data, config.mesh.fsdp = 1, 2
config.evals.oracle = dict(type="oracle", every_steps=4, data="synthetic_edit/tiny", steps=2, num_edits=3,
                           batch_size=2, dtype="float32")
trainer.train_and_evaluate(config, sys.argv[3])
"""


def test_evals_run_beside_fsdp_sharded_training_on_two_devices(tmp_path, tiny_tokenizer, synthetic_data_dir):
    workdir = tmp_path / "sharded"
    run_script(SHARDED_SCRIPT, tiny_tokenizer, synthetic_data_dir, workdir, devices=2)
    rows = _eval_rows(workdir, "oracle")
    assert sorted(rows) == [4] and {f"{p}_score" for p in PERSPECTIVES} <= set(rows[4])
    # the sampler shards the 3 edits (padded to 2 per device) over both devices: all 3 written, once
    assert sorted(p.name for p in (workdir / "eval" / "4" / "oracle" / "images").iterdir()) == sorted(
        f"{e['name']}.png"
        for e in json.loads((workdir / "eval" / "4" / "oracle" / "results.json").read_text())["edits"]
    )
    assert len(list((workdir / "eval" / "4" / "oracle" / "images").iterdir())) == 3
    assert (workdir / "eval" / "4" / "oracle" / "grid.png").is_file()


def test_gpt_evaluator_judges_the_written_edits_through_the_judge_api(run, judge_server, fake_key):
    from rewardedit_jax import evaluators
    from rewardedit_jax.judge import JudgeConfig

    folder = run / "eval" / "8" / "oracle"
    edits = json.loads((folder / "results.json").read_text())["edits"]
    records = [
        evaluators.EditRecord(
            evaluators.BenchmarkEdit(e["index"], e["name"], e["instruction"], e["edit_type"], e["name"]),
            source=None,
            edited=np.asarray(Image.open(folder / "images" / f"{e['name']}.png")),
            source_path=str(folder / "inputs" / f"{e['name']}.png"),
            edited_path=str(folder / "images" / f"{e['name']}.png"),
        )
        for e in edits
    ]
    config = JudgeConfig(
        model="gpt-4o", base_url=judge_server.base_url, concurrency=4, max_attempts=2, cache_path=None
    )
    summary = evaluators.make_evaluator("gpt", judge_config=config).summarize(records)
    assert len(judge_server.requests) == 3 * len(records)
    assert summary["following_yes"] == 1.0 and summary["quality_score"] == 4.5  # the fake server's answer
    assert summary["failed"] == 0 and summary["n"] == len(records)


EVALS_CONFIG = """
from configs import test_tiny


def get_config():
    c = test_tiny.get_config()
    c.evals.oracle = dict(
        type="oracle", every_steps=2, data="synthetic_edit/tiny", steps=2, num_edits=3, batch_size=2,
        dtype="float32",
    )
    return c
"""


def test_two_hosts_evaluate_on_process_0_while_the_other_waits(tmp_path, tiny_tokenizer, synthetic_data_dir):
    from rewardedit_jax.evaluate import evaluate

    config_file = tmp_path / "evals_config.py"
    config_file.write_text(EVALS_CONFIG)
    workdir = tmp_path / "two"
    overrides = {
        "total_steps": 4,
        "checkpoint_every_steps": 4,
        "model.tokenizer": tiny_tokenizer,
        "data.data_dir": synthetic_data_dir,
    }
    run_two_hosts(train_argv(workdir, overrides, config=config_file), cpu_env(2))
    rows = [r for r in _rows(workdir) if "eval/oracle/following_score" in r]
    assert [r["step"] for r in rows] == [2, 4]  # written once, by process 0
    assert sorted(p.name for p in (workdir / "eval").iterdir()) == ["2", "4"]
    # The same weights (checkpoint 4's EMA), edits and sampler settings through the CLI on one device.
    sampling = dict(steps=2, seed=42, limit=3, batch_size=2, dtype="float32")  # EVALS_CONFIG's
    quiet = dict(progress=False, log=None)
    data = ("synthetic_edit/tiny", synthetic_data_dir)
    results = evaluate(workdir, *data, tmp_path / "cli", judge="oracle", **sampling, **quiet)
    for p in PERSPECTIVES:
        assert rows[-1][f"eval/oracle/{p}_score"] == results["overall"][f"{p}_score"]
        assert rows[-1][f"eval/oracle/{p}_yes"] == results["overall"][f"{p}_yes"]
    for png in (tmp_path / "cli" / "images").glob("*.png"):
        trained = np.asarray(Image.open(workdir / "eval" / "4" / "oracle" / "images" / png.name))
        np.testing.assert_array_equal(np.asarray(Image.open(png)), trained)
