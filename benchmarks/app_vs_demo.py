"""The app against the demo's own evaluation: does ``python -m rewardedit_jax.app`` serve what ``make demo``
measured?

    python benchmarks/app_vs_demo.py [--demo-out demo_out] [--limit 128] [--json FILE]

For the first ``--limit`` test edits of the demo's last seed, the app (:class:`rewardedit_jax.app.EditApp`,
what its Edit button calls, loaded as ``python -m rewardedit_jax.app`` loads the demo's model) edits each
fitted source at 5,5,5 with the best feedback and at 1,1,1 with the failure texts, with the evaluation's
sampling settings and seeds (seed + index). It prints, per condition, how far the app's edits are from the
demo's evaluated images of the same edits (pixels, 0..255) and the oracle's mean scores of the app's edits
beside the demo's own judgments of the same edits. docs/app.md records a run on a full ``make demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

PERSPECTIVES = ("following", "preserving", "quality")


def conditions():
    """(evaluation name, reward scores, feedback) of the two rows the demo's table compares."""
    from rewardedit_jax.demo import BEST_FEEDBACK, LOW_FEEDBACK

    return (("reward_555", (5.0, 5.0, 5.0), BEST_FEEDBACK), ("reward_111", (1.0, 1.0, 1.0), LOW_FEEDBACK))


def compare(out: Path, limit: int, argv: list[str] = (), log=print) -> dict:
    """condition -> {edits, max_abs_diff, mean_abs_diff, app: {perspective: mean}, demo: {...}}."""
    from PIL import Image

    from rewardedit_jax import app as app_lib
    from rewardedit_jax import oracle
    from rewardedit_jax.evaluate.outputs import JsonlStore
    from rewardedit_jax.evaluators import Benchmark, edit_seed, resolve_benchmark
    from rewardedit_jax.io import read_json

    out = Path(out).absolute()
    results = read_json(out / "results.json")
    seed_dir = out / f"seed{results['settings']['seeds'][-1]}"
    os.environ["DEMO_OUT"] = str(out)  # the app's default model: the demo's export
    app = app_lib.load_app(None, argv=argv, examples_dir=tempfile.mkdtemp(prefix="app-vs-demo-"), log=log)
    bench = Benchmark(
        "synthetic_edit",
        resolve_benchmark(f"synthetic_edit/{results['settings']['data_config']}", out / "tfds"),
        limit,
    )
    found = {}
    for name, reward, feedback in conditions():
        folder = seed_dir / f"eval_{name}"
        requested = read_json(folder / "generation.json")["requested"]
        if (requested["reward"], requested["feedback"]) != (list(reward), feedback):
            raise SystemExit(f"error: {folder} is not the evaluation at {reward} with the demo's feedback")
        judgments = JsonlStore(folder / "judgments.jsonl")
        diffs, app_scores, demo_scores = [], [], []
        for edit in bench.edits:
            source = app.load_image(folder / "inputs" / bench.input_name(edit))
            edited = app.edit(
                source,
                edit.instruction,
                reward=reward,
                feedback=feedback,
                seed=edit_seed(requested["seed"], edit),
                steps=requested["steps"],
                text_guidance=requested["text_guidance"],
                image_guidance=requested["image_guidance"],
            )
            evaluated = np.asarray(Image.open(folder / "images" / f"{edit.name}.png").convert("RGB"))
            diffs.append(np.abs(edited.astype(np.int16) - evaluated.astype(np.int16)))
            target = np.asarray(bench.target(edit))
            judged = oracle.judge_edit(np.asarray(bench.source(edit)), edited, target)
            app_scores.append([judged[p]["score"] for p in PERSPECTIVES])
            demo = judgments.find(index=edit.index)
            demo_scores.append([demo[p]["score"] for p in PERSPECTIVES])
        diffs = np.stack(diffs)
        found[name] = {
            "edits": len(bench.edits),
            "max_abs_diff": int(diffs.max()),
            "mean_abs_diff": float(diffs.mean()),
            "app": dict(zip(PERSPECTIVES, np.mean(app_scores, axis=0).round(3).tolist())),
            "demo": dict(zip(PERSPECTIVES, np.mean(demo_scores, axis=0).round(3).tolist())),
        }
    return found


def table(found: dict) -> str:
    lines = [f"{'':28s}" + "".join(f"{p:>12s}" for p in PERSPECTIVES) + "   pixels |app - demo| max / mean"]
    for name, row in found.items():
        for side in ("app", "demo"):
            scores = "".join(f"{row[side][p]:12.3f}" for p in PERSPECTIVES)
            extra = f"   {row['max_abs_diff']} / {row['mean_abs_diff']:.4f}" if side == "app" else ""
            lines.append(f"{name + ' (' + side + ', ' + str(row['edits']) + ' edits)':28s}{scores}{extra}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-out", default="demo_out", help="what `make demo` wrote (default demo_out)")
    parser.add_argument("--limit", type=int, default=128, help="test edits per condition (default 128)")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("app_args", nargs="*", help="after --: the app's flags (e.g. --resolution 16)")
    args = parser.parse_args(argv)
    if not (Path(args.demo_out) / "results.json").is_file():
        parser.error(f"--demo-out {args.demo_out}: no results.json; run `make demo` first")
    found = compare(Path(args.demo_out), args.limit, args.app_args)
    print(table(found))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
