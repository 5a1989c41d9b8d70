"""The offline demo end to end, shortened (a few steps on synthetic_edit/tiny): every stage runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> Path:
    """The quick demo's output folder, made once per test run (the demo takes minutes).

    ``python -m rewardedit_jax.demo --quick --reward-guidance 1`` writes it; its stdout and stderr are kept
    beside it, in ``stdout.txt`` and ``stderr.txt`` of the folder's parent.
    """
    out = tmp_path_factory.mktemp("quick_demo") / "demo_out"
    proc = subprocess.run(
        [sys.executable, "-m", "rewardedit_jax.demo", "--quick", "--reward-guidance", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    (out.parent / "stdout.txt").write_text(proc.stdout)
    (out.parent / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"the quick demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


@pytest.mark.heavy
def test_quick_demo_runs_every_stage_and_writes_the_report(quick_demo):
    out = quick_demo
    stdout = (out.parent / "stdout.txt").read_text()
    stderr = (out.parent / "stderr.txt").read_text()
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"baseline", "reward_555", "reward_111", "reward_555_rg"}
    assert set(results["comparison"]["reward_555_rg_vs_baseline"]) == {"following", "preserving", "quality"}
    for model in results["summary"].values():
        for key in ("following_score", "preserving_score", "quality_score", "l1"):
            assert model[key]["mean"] >= 0
    for name in ("report.html", "grid.png", "pytorch_edit.png"):
        assert (out / name).is_file(), name
    assert "following score" in stdout  # the comparison table is printed
    assert (out / "export_reward" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # The word tokenizer was made by stage 1's run and saved with its model; the export carries it.
    assert (out / "seed0" / "runs" / "stage1" / "model" / "tokenizer").is_dir()
    assert (out / "export_reward" / "tokenizer").is_dir() and not (out / "tokenizer").exists()
    # The export samples like the training: cosine betas, trailing timesteps, v-prediction.
    scheduler = json.loads((out / "export_reward" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    assert scheduler["beta_schedule"] == "squaredcos_cap_v2"
    assert scheduler["timestep_spacing"] == "trailing"
    # Evaluated with the official Real-Edit sampler, recorded in the results and in each evaluation.
    assert results["settings"]["scheduler"] == "euler_ancestral"
    generation = json.loads((out / "seed0" / "eval_reward_555" / "generation.json").read_text())
    assert generation["requested"]["scheduler"] == "euler_ancestral"
    assert generation["requested"]["seed_per_edit"] is True
    guided = json.loads((out / "seed0" / "eval_reward_555_rg" / "generation.json").read_text())["requested"]
    assert (guided["reward"], guided["reward_guidance"], guided["low_reward"]) == ([5, 5, 5], 1.0, [1, 1, 1])
    from rewardedit_jax.demo import LOW_FEEDBACK

    assert guided["low_feedback"] == LOW_FEEDBACK
    # The oracle evaluator during training (configs/demo.py): at each stage's end, in results and report.
    curves = results["training_evals"]
    assert {run: [p["step"] for p in points] for run, points in curves.items()} == {
        "stage1": [4],
        "baseline": [8],
        "reward": [8],
    }
    assert (out / "seed0" / "runs" / "reward" / "eval" / "4" / "oracle" / "grid.png").is_file()
    assert "During training" in (out / "report.html").read_text()
    # Long work is not silent: the trainer's progress lines and each stage's duration reach stderr.
    assert "step 4/4  loss" in stderr and "ETA" in stderr, stderr[-3000:]
    stages = ["the dataset", "training stage1", "training reward", "the PyTorch edit"]
    stages.append("evaluating reward -> eval_reward_555")
    for stage in stages:
        assert f"{stage}: done in " in stderr, stage


def test_training_curves_plot_the_oracle_rows_over_the_steps(tmp_path):
    from rewardedit_jax import demo

    for run, rows in {
        "stage1": [{"step": 2, "learning/loss": 1.0}, {"step": 4, "eval/oracle/following_score": 1.5}],
        "reward": [{"step": 4, "eval/oracle/following_score": 2.5, "eval/oracle/seconds": 1.0}],
    }.items():
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = demo.training_curves(tmp_path, stage1_steps=4)
    assert curves == {
        "stage1": [{"step": 4, "following_score": 1.5}],
        "reward": [{"step": 8, "following_score": 2.5}],
    }
    html = demo.curves_html(curves)
    assert html.count("<svg") == 3 and "<td>reward</td><td>8</td><td>2.50</td>" in html


def test_margins_hold_only_in_every_seed_and_beyond_the_seed_spread():
    from rewardedit_jax import demo

    def scores(following, preserving, quality):
        return {
            "overall": {
                "following_score": following,
                "preserving_score": preserving,
                "quality_score": quality,
            }
        }

    per_seed = {
        0: {
            "baseline": scores(1.0, 2.0, 2.0),
            "reward_555": scores(1.1, 3.0, 2.5),
            "reward_111": scores(0.5, 1, 1),
        },
        1: {
            "baseline": scores(1.2, 2.2, 2.1),
            "reward_555": scores(1.0, 3.1, 2.4),
            "reward_111": scores(0.6, 1, 1),
        },
    }
    comparison = demo.compare(per_seed, demo.summarize(per_seed))
    vs_baseline = comparison["reward_555_vs_baseline"]
    assert vs_baseline["preserving"]["margin"] == pytest.approx(0.95)
    assert vs_baseline["preserving"]["seed_spread"] == pytest.approx(0.2)  # the baseline's 2.0 .. 2.2
    assert vs_baseline["preserving"]["holds"] and vs_baseline["quality"]["holds"]
    assert not vs_baseline["following"]["holds"]  # worse in seed 1
    assert vs_baseline["following"]["per_seed"] == pytest.approx([0.1, -0.2])
    assert all(r["holds"] for r in comparison["reward_555_vs_reward_111"].values())
    assert "reward_555_rg_vs_baseline" not in comparison  # not evaluated, not compared


def test_a_run_that_trains_further_drops_its_old_evaluations_and_the_export(tmp_path, monkeypatch):
    import argparse

    from rewardedit_jax import demo

    seed_dir = tmp_path / "seed0"
    for name in ("eval_baseline", "eval_reward_555", "eval_reward_111", "eval_reward_555_rg"):
        (seed_dir / name).mkdir(parents=True)
    (tmp_path / demo.EXPORT_DIR).mkdir()
    trained = {"stage1": False, "reward": True, "baseline": False}  # --stage2-steps raised, baseline done
    monkeypatch.setattr(demo, "train", lambda config, workdir: trained[workdir.name])
    args = argparse.Namespace(
        data_config="tiny", resolution=32, stage1_steps=4, stage2_steps=8, sample_steps=2, limit=8
    )
    runs = demo.train_seed(args, tmp_path / "tfds", seed_dir, 0)
    assert runs == (seed_dir / "runs" / "reward", seed_dir / "runs" / "baseline")
    assert sorted(p.name for p in seed_dir.iterdir()) == ["eval_baseline"]
    assert not (tmp_path / demo.EXPORT_DIR).exists()
    # A stage 1 that trains again (a larger --stage1-steps) under existing stage-2 runs is refused.
    (seed_dir / "runs" / "baseline" / "checkpoints").mkdir(parents=True)
    trained["stage1"] = True
    with pytest.raises(SystemExit, match="stage-2 runs started from an earlier stage 1; use another --out"):
        demo.train_seed(args, tmp_path / "tfds", seed_dir, 0)


def test_an_out_dir_built_with_another_data_version_is_refused(tmp_path, monkeypatch):
    from rewardedit_jax import demo
    from rewardedit_jax.data import synthetic

    (tmp_path / "synthetic_edit" / "16px" / "0.9.0").mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("tfds build must not start"))
    with pytest.raises(
        SystemExit, match=f"another version of synthetic_edit than {synthetic.DATASET_VERSION}"
    ):
        demo.build_dataset(tmp_path, "16px")
    (tmp_path / "synthetic_edit" / "16px" / synthetic.DATASET_VERSION).mkdir()
    demo.build_dataset(tmp_path, "16px")  # already built: returns without building


def test_a_run_with_a_tokenizer_that_splits_words_is_refused(tmp_path):
    from rewardedit_jax import demo
    from rewardedit_jax.tokenizer import write_word_tokenizer

    words = ["change", "the", "triangle", "to", "yellow"]
    folder = write_word_tokenizer(tmp_path / "tokenizer", words)
    demo.check_tokenizer(folder, words)  # each word one token, as the trainer makes it: accepted
    # An earlier demo's tokenizer: "triangle" has no merges past "tri" and is spelled with several tokens.
    merges = (folder / "merges.txt").read_text().splitlines()
    (folder / "merges.txt").write_text("\n".join(m for m in merges if not m.startswith("tri")) + "\n")
    with pytest.raises(SystemExit, match=r"into several tokens \(triangle\): it was written by an earlier"):
        demo.check_tokenizer(folder, words)


def test_training_shows_a_progress_bar_on_a_terminal_and_log_lines_otherwise(monkeypatch):
    import io

    from rewardedit_jax.training import trainer

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert trainer._progress_bar(0, 10) is None  # not a terminal: log lines every log_every_steps
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = trainer._progress_bar(3, 10)
    bar.update(2)
    bar.set_postfix_str("loss 0.1234  5.00 img/s")
    bar.close()
    text = terminal.getvalue()
    assert "training" in text and "5/10" in text and "loss 0.1234  5.00 img/s" in text, text
