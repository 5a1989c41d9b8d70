"""The offline demo end to end, shortened (a few steps on synthetic_edit/tiny): every stage runs."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PERSPECTIVES = ("following", "preserving", "quality")


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


class _ExamplesTable(HTMLParser):
    """The report's example table (``<table id="examples">``): ``rows``, each a list of cells, each
    ``{"text", "src"}`` (the cell's text, and its image's src or None); the first row is the header."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[dict]] = []
        self._inside = False
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "examples":
            self._inside = True
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag in ("td", "th"):
            self._cell = {"text": "", "src": None}
            self.rows[-1].append(self._cell)
        elif self._cell is not None and tag == "img":
            self._cell["src"] = attrs["src"]
        elif self._cell is not None and tag == "br":
            self._cell["text"] += "\n"

    def handle_endtag(self, tag):
        if tag == "table":
            self._inside = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def examples_table(page: str) -> list[list[dict]]:
    parser = _ExamplesTable()
    parser.feed(page)
    return parser.rows


QUICK_COLUMNS = [
    "#",
    "edit type",
    "instruction",
    "source",
    "baseline (no reward, equal compute)",
    "reward model at 5,5,5",
    "reward model at 1,1,1 + failure texts",
    "reward model at 5,5,5, reward guidance 1 from 1,1,1",
    "target (ground truth)",
]


@pytest.mark.heavy
def test_quick_demo_report_names_every_column_and_each_rows_instruction(quick_demo):
    from rewardedit_jax.data.pipeline import load_data_source
    from rewardedit_jax.evaluators import resolve_benchmark

    out = quick_demo
    results = json.loads((out / "results.json").read_text())
    page = (out / "report.html").read_text()
    head, *rows = examples_table(page)
    # Every evaluated model has a column, between the source and the target, named for what it is.
    assert [c["text"] for c in head] == QUICK_COLUMNS
    models = list(results["example_columns"])[1:-1]
    assert list(results["example_columns"]) == ["source", *models, "target"]
    assert sorted(models) == sorted(results["summary"])
    # One row per evaluated test edit (8 with --quick), with the test set's own instruction and edit type.
    test_set, _ = load_data_source(resolve_benchmark("synthetic_edit/tiny", out / "tfds"), "test")
    assert len(rows) == 8
    for row in rows:
        name, edit_type, instruction, *images = row
        record = test_set[int(name["text"][:4])]
        assert instruction["text"] == record["instruction"].decode()
        assert edit_type["text"] == record["edit_type"].decode()
        assert all(c["src"] and (out / c["src"]).is_file() for c in images)
        # Under each model's edit, the oracle's three scores of that edit, as its evaluation judged it.
        for cell, model in zip(images[1:-1], models, strict=True):
            judgments = (out / "seed0" / f"eval_{model}" / "judgments.jsonl").read_text().splitlines()
            judged = [j for j in map(json.loads, judgments) if j["index"] == int(name["text"][:4])][-1]
            assert cell["text"].split("\n") == [f"{p} {judged[p]['score']:.1f}" for p in PERSPECTIVES]
    # One seed measures no spread: no verdict, in the page and in the printed margins.
    stdout = (out.parent / "stdout.txt").read_text()
    assert "one seed: no spread" in page and "one seed: no spread" in stdout
    assert "holds" not in page and "holds" not in stdout
    # The page says how to edit with the model in the app.
    assert "python -m rewardedit_jax.app --model" in page and "http://127.0.0.1:7860" in page


@pytest.mark.heavy
def test_the_app_serves_the_demos_model_and_makes_the_edits_it_evaluated(quick_demo, monkeypatch):
    """After the demo, ``python -m rewardedit_jax.app`` serves the demo's export at the resolution its
    training recorded, and what its Edit button makes at 5,5,5 and at 1,1,1 are the edits the demo
    evaluated (same pixels, same oracle scores), so they differ as the demo's table says
    (benchmarks/app_vs_demo.py; docs/app.md has the run on a full ``make demo``)."""
    from benchmarks.app_vs_demo import compare
    from rewardedit_jax import edit

    assert edit.model_resolution(quick_demo / "export_reward") == (32, 1)
    monkeypatch.setenv("DEMO_OUT", str(quick_demo))
    found = compare(quick_demo, limit=8, log=lambda line: None)
    assert set(found) == {"reward_555", "reward_111"}
    for name, row in found.items():
        assert row["edits"] == 8, name
        assert row["max_abs_diff"] <= 1, (name, row)
        assert row["app"] == row["demo"], (name, row)


def _scores(following, preserving, quality):
    return {
        "overall": {"following_score": following, "preserving_score": preserving, "quality_score": quality}
    }


def test_the_report_gives_a_verdict_only_over_a_measured_seed_spread():
    from rewardedit_jax import demo

    per_seed = {
        0: {"baseline": _scores(1.0, 2.0, 2.0), "reward_555": _scores(1.1, 3.0, 2.5)},
        1: {"baseline": _scores(1.2, 2.2, 2.1), "reward_555": _scores(1.0, 3.1, 2.4)},
    }
    models = demo.model_headings(None)
    del models["reward_111"]  # not evaluated here: no column
    example = {
        "name": "0003_3",
        "instruction": "change the triangle to yellow",
        "edit_type": "recolor",
        "images": {c: f"examples/0003_3_{c}.png" for c in ("source", "baseline", "reward_555", "target")},
        "scores": {
            "baseline": {"following": 1.0, "preserving": 4.5, "quality": 2.0},
            "reward_555": {"following": 5.0, "preserving": None, "quality": 3.0},
        },
    }

    def report(per_seed):
        summary = demo.summarize(per_seed)
        comparison = demo.compare(per_seed, summary)
        page = demo.render_report(
            summary, per_seed, comparison, models=models, example_rows=[example], app="python -m x.app"
        )
        return comparison["reward_555_vs_baseline"], page

    one_seed, page = report({0: per_seed[0]})
    assert [r["holds"] for r in one_seed.values()] == [None, None, None]
    assert "following +0.100 (one seed: no spread)" in page
    assert "holds" not in page and "spread 0.000" not in page and "not shown" not in page
    assert "<td>1.000</td>" in page  # a score without a spread
    two_seeds, page = report(per_seed)
    assert [r["holds"] for r in two_seeds.values()] == [False, True, True]
    assert "following -0.050 (spread 0.200: not shown)" in page
    assert "preserving +0.950 (spread 0.200: holds)" in page
    assert "<td>1.100 (spread 0.200)</td>" in page and "one seed" not in page
    # The examples: a column per image, the row's instruction and edit type, the scores under each edit.
    head, row = examples_table(page)
    assert [c["text"] for c in head] == [c for c in QUICK_COLUMNS if "1,1,1" not in c]
    assert [c["text"] for c in row[:3]] == ["0003_3", "recolor", "change the triangle to yellow"]
    assert [c["src"] for c in row[3:]] == list(example["images"].values())
    assert row[4]["text"] == "following 1.0\npreserving 4.5\nquality 2.0"
    assert row[5]["text"] == "following 5.0\npreserving \u2013\nquality 3.0"
    assert row[3]["text"] == row[6]["text"] == ""  # source and target: not judged
    assert "python -m x.app" in page and 'href="http://127.0.0.1:7860"' in page


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

    per_seed = {
        0: {
            "baseline": _scores(1.0, 2.0, 2.0),
            "reward_555": _scores(1.1, 3.0, 2.5),
            "reward_111": _scores(0.5, 1, 1),
        },
        1: {
            "baseline": _scores(1.2, 2.2, 2.1),
            "reward_555": _scores(1.0, 3.1, 2.4),
            "reward_111": _scores(0.6, 1, 1),
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
