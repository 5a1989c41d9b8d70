"""``python -m rewardedit_jax.demo``: the offline end-to-end demonstration of the paper's effect.

On a laptop, without weights, downloads or API keys: builds `synthetic_edit` with ``tfds build``, trains
a stage-1 model (no reward) on the imperfect training edits, then from it (a) the stage-2 reward model and
(b), for an equal-compute baseline, the no-reward model for the same number of steps; evaluates both on
the synthetic test split with the ground-truth oracle judge (the reward model at 5,5,5 and, to show that
the condition steers, at 1,1,1 with failure texts); exports the reward model to diffusers and runs one
edit through the PyTorch export; writes ``OUT/results.json``, ``OUT/report.html`` (scores, margins, and
a table of example edits: each row's instruction and edit type, a named column per model, the oracle's
scores under each edit; its images in ``OUT/examples/``) and ``OUT/grid.png`` (the same images as one).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import shlex
import shutil
import subprocess
import sys
import time
from html import escape as html_escape
from pathlib import Path

import numpy as np

from rewardedit_jax.data import synthetic, vocabulary
from rewardedit_jax.io import PathError, atomic_write_text, check_creatable, write_json


class DemoError(SystemExit):
    """A user error: ``main`` prints its one line and exits with status 2 (a SystemExit, so that a stage
    called on its own also stops with the message)."""


PERSPECTIVES = ("following", "preserving", "quality")
# The best condition is what the training data pairs with scores of 5 (synthetic_edit's perfect text; the
# official models were trained with RewardEdit20K's own texts and use "None; None; None"); the low one
# names failures of every perspective.
BEST_FEEDBACK = "; ".join(["There are no noticeable negative aspects."] * 3)
LOW_FEEDBACK = vocabulary.LOW_FEEDBACK  # words of its texts are single tokens of the word tokenizer too
# The official Real-Edit sampler (docs/sources.md, "Generation settings"): stochastic, so each model is
# sampled from the distribution it learned (corruptions included), not from its deterministic mean path.
SCHEDULER = "euler_ancestral"
EXPORT_DIR = "export_reward"  # OUT/export_reward: the last seed's reward model in diffusers format


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stage(name: str):
    """Says when a stage ends and how long it took."""
    start = time.perf_counter()
    yield
    _log(f"{name}: done in {_duration(time.perf_counter() - start)}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _show_training_progress() -> None:
    """The trainer's progress lines (step/total, loss, images/s, time left) on stderr, as the demo's own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[demo %(asctime)s]   %(message)s", "%H:%M:%S"))
    trainer_log = logging.getLogger("rewardedit_jax.train")
    trainer_log.addHandler(handler)
    trainer_log.setLevel(logging.INFO)
    trainer_log.propagate = False


def build_dataset(data_dir: Path, config_name: str) -> None:
    from rewardedit_jax.data.synthetic import DATASET_VERSION

    built = data_dir / "synthetic_edit" / config_name
    if (built / DATASET_VERSION).is_dir():
        _log(f"synthetic_edit/{config_name} {DATASET_VERSION} already built in {data_dir}")
        return
    if built.is_dir():  # runs trained on another version would be compared with new test edits
        raise DemoError(
            f"error: {built} holds another version of synthetic_edit than {DATASET_VERSION}; "
            "use another --out"
        )
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise DemoError(
            "error: building synthetic_edit needs tensorflow-datasets: pip install 'rewardedit-jax[data]'"
        )
    _log(f"building synthetic_edit/{config_name} {DATASET_VERSION} with tfds build")
    # `tfds build` by name, the builders registered by importing them from this package: it works from an
    # installed package, and TensorFlow stays out of this process, which trains.
    cmd = [
        sys.executable,
        "-m",
        "tensorflow_datasets.scripts.cli.main",
        "build",
        f"synthetic_edit/{config_name}",
        "--imports",
        "rewardedit_jax.tfds_builders",
        "--data_dir",
        str(data_dir),
        "--file_format",
        "array_record",
    ]
    if subprocess.run(cmd).returncode != 0:
        raise DemoError(f"error: tfds build of synthetic_edit/{config_name} failed (its output is above)")


def check_tokenizer(folder: Path, words: list[str]) -> None:
    """Refuse a run whose tokenizer (``folder``) spells a word of the dataset with several tokens.

    Earlier demos wrote such tokenizers ("change", "triangle" split); models trained with them are not
    what docs/demo.md reports, so their output folders are refused.
    """
    from rewardedit_jax.tokenizer import load_tokenizer

    backend = load_tokenizer(folder).backend
    split = [w for w in words if len(backend.tokenize(w)) != 1]
    if split:
        raise DemoError(
            f"error: {folder} splits words of the dataset into several tokens ({', '.join(split[:3])}): "
            "it was written by an earlier version of the demo; use another --out"
        )


def _config(args, data_dir: Path, *, reward: bool, steps: int, seed: int, init_from=""):
    from rewardedit_jax.configs import demo as demo_config

    c = demo_config.get_config()
    # model.tokenizer stays '': stage 1 makes the dataset's word tokenizer and saves it with its model,
    # and the stage-2 runs take it from there.
    c.data.data_dir = str(data_dir)
    c.data.name = f"synthetic_edit/{args.data_config}"
    c.data.resolution = args.resolution
    c.seed = seed
    c.total_steps = steps
    c.reward.enabled = reward
    c.init_from = str(init_from) if init_from else ""
    c.log_every_steps = max(1, min(c.log_every_steps, steps // 5 or 1))
    c.checkpoint_every_steps = steps
    c.evals.oracle.data = c.data.name
    return c


def train(config, workdir: Path) -> bool:
    """Train ``workdir`` to ``config.total_steps`` (resuming a shorter run); False if already there."""
    from rewardedit_jax.training.trainer import train_and_evaluate

    if (workdir / "checkpoints" / str(config.total_steps)).is_dir():
        _log(f"{workdir.name}: already trained")
        return False
    _log(f"training {workdir.name}: {config.total_steps} steps, reward={config.reward.enabled}")
    with _stage(f"training {workdir.name}"):
        train_and_evaluate(config, workdir)
    return True


def drop_stale_evaluations(seed_dir: Path, prefix: str) -> None:
    """Remove ``seed_dir/eval_<prefix>*``: edits of a model that has trained further since."""
    for stale in sorted(seed_dir.glob(f"eval_{prefix}*")):
        _log(f"{stale.name}: made by an earlier checkpoint; evaluating again")
        shutil.rmtree(stale)


def train_seed(args, data_dir: Path, seed_dir: Path, seed: int) -> tuple[Path, Path]:
    """Stage 1, then from it the reward model and the baseline: ``(reward_run, baseline_run)``.

    Finished runs are kept; a run with fewer steps than asked resumes (a larger ``--stage2-steps`` on an
    existing ``--out``), and the evaluations of a run that trained further are removed.
    """
    runs = seed_dir / "runs"
    stage1, reward_run, baseline_run = runs / "stage1", runs / "reward", runs / "baseline"
    tokenizer = stage1 / "model" / "tokenizer"
    if tokenizer.is_dir():
        check_tokenizer(tokenizer, vocabulary.dataset_words(f"synthetic_edit/{args.data_config}", data_dir))
    stage1_trained = train(_config(args, data_dir, reward=False, steps=args.stage1_steps, seed=seed), stage1)
    if stage1_trained and any((r / "checkpoints").is_dir() for r in (reward_run, baseline_run)):
        raise DemoError(
            f"error: {runs} holds stage-2 runs started from an earlier stage 1; use another --out"
        )
    for run, reward, prefix in ((reward_run, True, "reward"), (baseline_run, False, "baseline")):
        config = _config(args, data_dir, reward=reward, steps=args.stage2_steps, seed=seed, init_from=stage1)
        if train(config, run):
            drop_stale_evaluations(seed_dir, prefix)
            if reward:  # the export is made again from the reward model that trained further
                shutil.rmtree(seed_dir.parent / EXPORT_DIR, ignore_errors=True)
    return reward_run, baseline_run


def evaluate(model: Path, out: Path, data_dir: Path, args, **kwargs) -> dict:
    from rewardedit_jax.evaluate import evaluate as run_eval

    _log(f"evaluating {model.name} -> {out.name}")
    with _stage(f"evaluating {model.name} -> {out.name}"):
        return run_eval(
            model,
            f"synthetic_edit/{args.data_config}",
            data_dir,
            out,
            judge="oracle",
            steps=args.sample_steps,
            scheduler=SCHEDULER,
            text_guidance=args.text_guidance,
            image_guidance=args.image_guidance,
            seed=0,
            seed_per_edit=True,  # independent noise per edit: 256 samples, not one noise draw 256 times
            limit=args.limit,
            batch_size=64,
            progress=False,
            log=None,
            **kwargs,
        )


def pytorch_edit(export_dir: Path, data_dir: Path, args, out_png: Path) -> None:
    import torch
    from PIL import Image

    from rewardedit_jax.data.pipeline import load_data_source
    from rewardedit_jax.torch_compat import RewardEditPipeline

    source, _ = load_data_source(f"synthetic_edit/{args.data_config}", "test", str(data_dir))
    ex = source[0]
    image = ex["source_image"]
    image = (
        Image.fromarray(np.asarray(image))
        if not isinstance(image, bytes)
        else Image.open(__import__("io").BytesIO(image))
    )
    instruction = (
        ex["instruction"].decode() if isinstance(ex["instruction"], bytes) else str(ex["instruction"])
    )
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = RewardEditPipeline.from_pretrained(str(export_dir))
    # the sampler the evaluation used
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    edited = pipe(
        instruction,
        image,
        num_inference_steps=args.sample_steps,
        guidance_scale=args.text_guidance,
        image_guidance_scale=args.image_guidance,
        reward_scores=(5.0, 5.0, 5.0),
        feedback=BEST_FEEDBACK,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    edited.save(out_png)
    _log(f"PyTorch export edited {instruction!r} -> {out_png}")


def summarize(per_seed: dict) -> dict:
    """Mean and spread (max - min) over seeds of each model's overall scores."""
    models = sorted({m for results in per_seed.values() for m in results})
    summary = {}
    for m in models:
        rows = [per_seed[s][m]["overall"] for s in per_seed if m in per_seed[s]]
        summary[m] = {}
        for key in [f"{p}_{k}" for p in PERSPECTIVES for k in ("score", "yes")] + ["l1", "l2"]:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                summary[m][key] = {"mean": float(np.mean(vals)), "spread": float(np.max(vals) - np.min(vals))}
    return summary


COMPARISONS = (("reward_555", "baseline"), ("reward_555", "reward_111"), ("reward_555_rg", "baseline"))
# holds is None with one seed: a margin over a spread never measured is no verdict.
VERDICT = {True: "holds", False: "not shown", None: "one seed: no spread"}


def compare(per_seed: dict, summary: dict) -> dict:
    """Per perspective, the margin of ``a`` over ``b`` (score difference) in each seed and on the mean.

    ``holds`` when ``a`` beats ``b`` in every seed and the mean margin exceeds the seed spread (the larger
    of the two models' max - min over seeds); None with a single seed, which measures no spread.
    """
    out = {}
    for a, b in COMPARISONS:
        if a not in summary or b not in summary:
            continue
        rows = {}
        for p in PERSPECTIVES:
            key = f"{p}_score"
            diffs = [
                per_seed[s][a]["overall"][key] - per_seed[s][b]["overall"][key]
                for s in per_seed
                if a in per_seed[s] and b in per_seed[s]
            ]
            if not diffs or key not in summary.get(a, {}) or key not in summary.get(b, {}):
                continue
            spread = max(summary[a][key]["spread"], summary[b][key]["spread"])
            margin = summary[a][key]["mean"] - summary[b][key]["mean"]
            rows[p] = {
                "margin": margin,
                "per_seed": diffs,
                "seed_spread": spread,
                "holds": bool(min(diffs) > 0 and margin > spread) if len(diffs) > 1 else None,
            }
        out[f"{a}_vs_{b}"] = rows
    return out


def comparison_lines(comparison: dict) -> list[str]:
    lines = []
    for name, rows in comparison.items():
        cells = [
            f"{p} {r['margin']:+.3f} ("
            + (f"spread {r['seed_spread']:.3f}: " if r["holds"] is not None else "")
            + f"{VERDICT[r['holds']]})"
            for p, r in rows.items()
        ]
        lines.append(f"{name.replace('_vs_', ' - ')}: " + "; ".join(cells))
    return lines


def margins_heading(seeds: int) -> str:
    """What the margins below it are, and (with several seeds) when one holds."""
    if seeds < 2:
        return "margins (one seed: no spread, so no verdict; run several --seeds for one):"
    return "margins (mean over seeds; holds = better in every seed and by more than the spread):"


def table(summary: dict, seeds: int) -> str:
    lines = [
        f"{'model':<22}" + "".join(f"{p + ' score':>20}" for p in PERSPECTIVES) + f"{'L1 to target':>16}"
    ]
    for m, vals in summary.items():
        cells = []
        for key in [f"{p}_score" for p in PERSPECTIVES] + ["l1"]:
            v = vals.get(key)
            spread = f" ±{v['spread'] / 2:.3f}" if v and seeds > 1 else ""
            cells.append(f"{v['mean']:.3f}{spread}" if v else "n/a")
        lines.append(f"{m:<22}" + "".join(f"{c:>20}" for c in cells[:3]) + f"{cells[3]:>16}")
    return "\n".join(lines)


APP_URL = "http://127.0.0.1:7860"  # python -m rewardedit_jax.app's default host and port
EXAMPLES_DIR = "examples"  # OUT/examples: the report's example images, one file per table cell
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img.cell { width: 96px; height: 96px; image-rendering: pixelated; display: block; }
.scores { font-size: 0.85em; font-variant-numeric: tabular-nums; white-space: nowrap; }
"""


def model_headings(reward_guidance: float | None) -> dict[str, str]:
    """What each evaluated model is, as the report names it (keys: the ``eval_<key>`` folders)."""
    headings = {
        "baseline": "baseline (no reward, equal compute)",
        "reward_555": "reward model at 5,5,5",
        "reward_111": "reward model at 1,1,1 + failure texts",
    }
    if reward_guidance is not None:
        headings["reward_555_rg"] = f"reward model at 5,5,5, reward guidance {reward_guidance:g} from 1,1,1"
    return headings


def example_columns(models: dict[str, str]) -> dict[str, str]:
    """The example table's image columns, left to right: key -> heading."""
    return {"source": "source", **models, "target": "target (ground truth)"}


def examples(out: Path, seed_dir: Path, data_dir: Path, data_config: str, models, n: int = 8) -> list[dict]:
    """The first ``n`` test edits of ``seed_dir``'s evaluations of ``models``, as the report shows them.

    Each: ``name``, ``instruction``, ``edit_type``, ``images`` (column of :func:`example_columns` -> a copy
    under ``OUT/examples/``, relative to ``out``) and ``scores`` (model -> the oracle's score per
    perspective, from its ``judgments.jsonl``). An edit with an image missing is left out.
    """
    from rewardedit_jax.evaluate.outputs import JsonlStore
    from rewardedit_jax.evaluators import Benchmark, resolve_benchmark

    bench = Benchmark("synthetic_edit", resolve_benchmark(f"synthetic_edit/{data_config}", data_dir), n)
    evals = {m: seed_dir / f"eval_{m}" for m in models}
    judgments = {m: JsonlStore(folder / "judgments.jsonl") for m, folder in evals.items()}
    first = next(iter(evals.values()))
    shutil.rmtree(out / EXAMPLES_DIR, ignore_errors=True)
    (out / EXAMPLES_DIR).mkdir()
    rows = []
    for edit in bench.edits:
        files = {"source": first / "inputs" / bench.input_name(edit)}
        files.update({m: folder / "images" / f"{edit.name}.png" for m, folder in evals.items()})
        files["target"] = first / "targets" / f"{edit.name}.png"
        if not all(f.is_file() for f in files.values()):
            continue
        images = {column: f"{EXAMPLES_DIR}/{edit.name}_{column}.png" for column in files}
        for column, file in files.items():
            shutil.copyfile(file, out / images[column])
        scores = {}
        for m, store in judgments.items():
            found = store.find(index=edit.index) or {}
            scores[m] = {p: (found.get(p) or {}).get("score") for p in PERSPECTIVES}
        rows.append(
            {
                "name": edit.name,
                "instruction": edit.instruction,
                "edit_type": edit.edit_type,
                "images": images,
                "scores": scores,
            }
        )
    return rows


def app_command(out: Path) -> str:
    """The command that serves ``out``'s reward model in the app (its default is ./demo_out's)."""
    if out == Path.cwd() / "demo_out":
        return "python -m rewardedit_jax.app"
    return f"python -m rewardedit_jax.app --model {shlex.quote(str(out / EXPORT_DIR))}"


def _score_text(scores: dict | None) -> str:
    if scores is None:
        return ""
    parts = [f"{p} {'&ndash;' if v is None else f'{v:.1f}'}" for p, v in scores.items()]
    return f'<div class="scores">{"<br>".join(parts)}</div>'


def examples_html(columns: dict[str, str], rows: list[dict], seed: int) -> str:
    """The example table: a row per test edit (its instruction and edit type), a column per image, and
    under each model's edit the oracle's three scores."""
    if not rows:
        return ""
    head = "".join(f"<th>{html_escape(h)}</th>" for h in ["#", "edit type", "instruction", *columns.values()])
    body = []
    for row in rows:
        cells = [
            f"<td>{html_escape(row['name'])}</td>",
            f"<td>{html_escape(row['edit_type'])}</td>",
            f'<td class="instruction">{html_escape(row["instruction"])}</td>',
        ]
        for column, heading in columns.items():
            path = html_escape(row["images"][column])
            image = f'<a href="{path}"><img class="cell" src="{path}" alt="{html_escape(heading)}"></a>'
            cells.append(f"<td>{image}{_score_text(row['scores'].get(column))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h2>Examples</h2><p>The first test edits of seed {seed}, edited by each model; under each edit the "
        "oracle judge's scores (0..5).</p>"
        f'<table id="examples"><tr>{head}</tr>{"".join(body)}</table>'
    )


def render_report(
    summary: dict,
    per_seed: dict,
    comparison: dict,
    *,
    models: dict[str, str],
    example_rows: list[dict],
    app: str,
    grid_rel: str | None = None,
    curves: dict | None = None,
) -> str:
    """The HTML of ``OUT/report.html``. ``models``: model key -> heading (:func:`model_headings`);
    ``example_rows``: :func:`examples`; ``app``: the command that serves the model."""
    seeds = len(per_seed)
    keys = [f"{p}_score" for p in PERSPECTIVES] + [f"{p}_yes" for p in PERSPECTIVES]

    def value(v: dict) -> str:
        return f"{v['mean']:.3f}" + (f" (spread {v['spread']:.3f})" if seeds > 1 else "")

    order = [m for m in models if m in summary] + [m for m in summary if m not in models]  # as the columns
    rows = "".join(
        f"<tr><td>{html_escape(models.get(m, m))} <code>{m}</code></td>"
        + "".join(f"<td>{value(summary[m][k])}</td>" if k in summary[m] else "<td>n/a</td>" for k in keys)
        + "</tr>"
        for m in order
    )
    head = "".join(f"<th>{p} score</th>" for p in PERSPECTIVES) + "".join(
        f"<th>{p} yes</th>" for p in PERSPECTIVES
    )
    caption = "Mean over seeds (spread = max - min)." if seeds > 1 else "One seed: no spread."
    links = "".join(
        f"<li>seed {s}: "
        + ", ".join(
            f'<a href="seed{s}/eval_{m}/report.html">{html_escape(models.get(m, m))}</a>' for m in per_seed[s]
        )
        + "</li>"
        for s in per_seed
    )
    grid = f'<p>The examples as one image: <a href="{grid_rel}">{grid_rel}</a>.</p>' if grid_rel else ""
    margins = [margins_heading(seeds), *comparison_lines(comparison)] if comparison else []
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'><title>rewardedit-jax demo</title>"
        f"<style>{_STYLE}</style>"
        "<h1>Multi-reward conditioning, offline demo</h1>"
        f"<p>Edit with this model yourself: <code>{html_escape(app)}</code> serves it at "
        f'<a href="{APP_URL}">{APP_URL}</a>.</p>'
        f"<h2>Scores</h2><table><tr><th>model</th>{head}</tr>{rows}</table>"
        f"<p>{caption} Oracle judge on the synthetic test split.</p>"
        + "".join(f"<p>{html_escape(line)}</p>" for line in margins)
        + examples_html(example_columns(models), example_rows, list(per_seed)[-1])
        + grid
        + curves_html(curves or {})
        + f"<h2>Per-seed reports</h2><ul>{links}</ul></html>"
    )


RUNS = ("stage1", "baseline", "reward")
CURVE_COLOURS = {"stage1": "#555", "baseline": "#1f77b4", "reward": "#d62728"}


def training_curves(seed_dir: Path, stage1_steps: int) -> dict[str, list[dict]]:
    """The oracle evaluator's rows (``eval/oracle/*`` in each run's metrics.jsonl) over the training steps:
    run -> [{"step" (counted from the start of stage 1), "<perspective>_score", "<perspective>_yes"}]."""
    from rewardedit_jax.training.metrics import read_metrics

    curves = {}
    for run in RUNS:
        offset = 0 if run == "stage1" else stage1_steps
        points = []
        for row in read_metrics(seed_dir / "runs" / run):
            values = {
                k.removeprefix("eval/oracle/"): v
                for k, v in row.items()
                if k.startswith("eval/oracle/") and k.endswith(("_score", "_yes"))
            }
            if values:
                points.append({"step": row["step"] + offset, **values})
        if points:
            curves[run] = points
    return curves


def curves_html(curves: dict[str, list[dict]]) -> str:
    """An SVG plot of each perspective's oracle score over the training steps, and the table behind it."""
    if not curves:
        return ""
    width, height, pad = 300, 180, 30
    last = max(p["step"] for points in curves.values() for p in points)
    plots = []
    for perspective in PERSPECTIVES:
        lines = []
        for run, points in curves.items():
            xy = " ".join(
                f"{pad + (width - 2 * pad) * p['step'] / last:.1f},"
                f"{height - pad - (height - 2 * pad) * p[f'{perspective}_score'] / 5:.1f}"
                for p in points
                if f"{perspective}_score" in p
            )
            colour = CURVE_COLOURS[run]
            lines.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
        axes = (
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
            f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">5</text>'
            f'<text x="{pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">0</text>'
            f'<text x="{width - pad}" y="{height - pad + 14}" font-size="10" text-anchor="end">'
            f"step {last}</text>"
            f'<text x="{width / 2}" y="14" font-size="12" text-anchor="middle">{perspective} score</text>'
        )
        plots.append(f'<svg width="{width}" height="{height}">{axes}{"".join(lines)}</svg>')
    legend = " ".join(f'<span style="color:{CURVE_COLOURS[r]}">&#9632; {r}</span>' for r in curves)
    head = "".join(f"<th>{p} score</th><th>{p} yes</th>" for p in PERSPECTIVES)
    rows = "".join(
        f"<tr><td>{run}</td><td>{p['step']}</td>"
        + "".join(
            f"<td>{p.get(f'{q}_score', float('nan')):.2f}</td><td>{p.get(f'{q}_yes', float('nan')):.2f}</td>"
            for q in PERSPECTIVES
        )
        + "</tr>"
        for run, points in curves.items()
        for p in points
    )
    return (
        "<h2>During training</h2><p>The oracle evaluator of <code>config.evals</code> (the first test edits, "
        "10 sampling steps, EMA weights; stage-2 steps counted after stage 1's).</p>"
        + "".join(plots)
        + f"<p>{legend}</p><table border=1 cellpadding=4>"
        + f"<tr><th>run</th><th>step</th>{head}</tr>{rows}</table>"
    )


def make_grid(out: Path, example_rows: list[dict], columns) -> str | None:
    """``OUT/grid.png``: the example table's images as one picture, a row per edit, ``columns`` in order."""
    from PIL import Image

    if not example_rows:
        return None
    rows = [
        np.concatenate([np.asarray(Image.open(out / r["images"][c]).convert("RGB")) for c in columns], axis=1)
        for r in example_rows
    ]
    grid = np.concatenate(rows, axis=0)
    scale = max(1, 256 // grid.shape[1] * 2)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(
        out / "grid.png"
    )
    return "grid.png"


def main(argv=None) -> int:
    try:
        return _main(argv)
    except DemoError as e:
        print(e, file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewardedit_jax.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-config", default="16px", help="synthetic_edit builder config")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--stage1-steps", type=int, default=800)
    parser.add_argument("--stage2-steps", type=int, default=1600, help="for each of reward and baseline")
    parser.add_argument("--sample-steps", type=int, default=30, help="Euler ancestral steps (official: 30)")
    parser.add_argument("--text-guidance", type=float, default=1.0, help="1 = no classifier-free guidance")
    parser.add_argument("--image-guidance", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=512, help="test edits to evaluate (16px has 512)")
    parser.add_argument(
        "--reward-guidance",
        type=float,
        help="also evaluate the reward model at 5,5,5 with this reward guidance scale away from 1,1,1 "
        "(row reward_555_rg; about 1.5 min more per seed)",
    )
    parser.add_argument("--quick", action="store_true", help="a few steps on synthetic_edit/tiny (CI smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.data_config, args.resolution = "tiny", 32
        args.stage1_steps, args.stage2_steps, args.sample_steps, args.limit = 4, 4, 2, 8
    logging.basicConfig(level=logging.WARNING)
    _show_training_progress()
    t0 = time.perf_counter()
    if args.data_config not in synthetic.BUILDER_CONFIGS:
        raise DemoError(
            f"error: --data-config {args.data_config}: not a synthetic_edit config; "
            f"choose one of {', '.join(synthetic.BUILDER_CONFIGS)}"
        )
    out = Path(args.out).absolute()
    try:
        check_creatable(out, "--out")
    except PathError as e:
        raise DemoError(f"error: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "tfds"
    with _stage("the dataset"):
        build_dataset(data_dir, args.data_config)

    per_seed, seed_seconds = {}, {}
    for seed in args.seeds:
        seed_start = time.perf_counter()
        sd = out / f"seed{seed}"
        reward_run, baseline_run = train_seed(args, data_dir, sd, seed)
        total = args.stage1_steps + args.stage2_steps
        results = {
            "baseline": evaluate(baseline_run, sd / "eval_baseline", data_dir, args),
            "reward_555": evaluate(
                reward_run, sd / "eval_reward_555", data_dir, args, reward="5,5,5", feedback=BEST_FEEDBACK
            ),
            "reward_111": evaluate(
                reward_run, sd / "eval_reward_111", data_dir, args, reward="1,1,1", feedback=LOW_FEEDBACK
            ),
        }
        if args.reward_guidance is not None:
            results["reward_555_rg"] = evaluate(
                reward_run,
                sd / "eval_reward_555_rg",
                data_dir,
                args,
                reward="5,5,5",
                feedback=BEST_FEEDBACK,
                reward_guidance=args.reward_guidance,
                low_reward="1,1,1",
                low_feedback=LOW_FEEDBACK,
            )
        per_seed[seed] = {m: {"overall": r["overall"]} for m, r in results.items()}
        seed_seconds[seed] = time.perf_counter() - seed_start
        _log(f"seed {seed}: {total} steps per model, {seed_seconds[seed]:.0f} s")

    last = out / f"seed{args.seeds[-1]}"
    from rewardedit_jax.convert.cli import main as convert_main

    export_dir = out / EXPORT_DIR
    if not export_dir.exists():
        with _stage("the diffusers export"):
            if convert_main(["export", str(last / "runs" / "reward"), str(export_dir)]) != 0:
                raise DemoError("error: the diffusers export failed (its output is above)")
    with _stage("the PyTorch edit"):
        pytorch_edit(export_dir, data_dir, args, out / "pytorch_edit.png")

    summary = summarize(per_seed)
    models = {m: h for m, h in model_headings(args.reward_guidance).items() if m in per_seed[args.seeds[-1]]}
    example_rows = examples(out, last, data_dir, args.data_config, models)
    grid_rel = make_grid(out, example_rows, example_columns(models))
    comparison = compare(per_seed, summary)
    curves = training_curves(last, args.stage1_steps)
    results = {
        "summary": summary,
        "comparison": comparison,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "training_evals": curves,  # the last seed's oracle during training (eval/oracle/* rows)
        "example_columns": example_columns(models),  # the report's example table (the last seed's)
        "examples": example_rows,
        "settings": {**vars(args), "scheduler": SCHEDULER},
        "elapsed_s": time.perf_counter() - t0,
        "seed_elapsed_s": {str(k): v for k, v in seed_seconds.items()},
    }
    write_json(out / "results.json", results, sort_keys=False)
    html = render_report(
        summary,
        per_seed,
        comparison,
        models=models,
        example_rows=example_rows,
        app=app_command(out),
        grid_rel=grid_rel,
        curves=curves,
    )
    atomic_write_text(out / "report.html", html)
    print(table(summary, len(per_seed)))
    print("\n".join(["", margins_heading(len(per_seed))] + comparison_lines(comparison)))
    print(f"\nwrote {out / 'report.html'}, {out / 'results.json'} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
