"""An evaluation's summary: ``results.json``, ``report.html`` and the grids of each edit type."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import numpy as np

from rewardedit_jax import evaluators, report
from rewardedit_jax.evaluate.outputs import OutputFolder, open_rgb, versions_info
from rewardedit_jax.evaluate.settings import EvalSettings, GenerationSettings
from rewardedit_jax.evaluators import PERSPECTIVES, SPLIT, BenchmarkEdit, aggregate
from rewardedit_jax.io import to_path

MAX_GRID_EDITS = 100  # edits shown per grid (the first ones of the type)
GRID_CELL = 128
# The order edit types are reported in (others follow alphabetically).
EDIT_TYPE_ORDER = (
    ("Local", "Remove", "Add", "Texture", "Background", "Global", "Style")  # Real-Edit, as in the paper
    + ("recolor", "remove", "add", "move", "background")  # synthetic_edit
)


def write_results(
    folder: OutputFolder,
    settings: EvalSettings,
    generation: GenerationSettings,
    judgments: Mapping[int, dict],
    metrics: Mapping[int, dict],
    stats: dict,
    *,
    start: float,
    log: Callable[[str], None],
) -> dict:
    """Write the grids, ``report.html`` and ``results.json`` (every file atomically); returns the results."""
    import jax

    bench, out = folder.bench, folder.out
    judged = settings.judge != "none"
    by_type: dict[str, list[BenchmarkEdit]] = {}
    for edit in bench.edits:
        by_type.setdefault(edit.edit_type, []).append(edit)
    by_type = dict(sorted(by_type.items(), key=lambda kv: _type_order(kv[0])))
    recorded = (
        json.loads((out / "generation.json").read_text()) if (out / "generation.json").is_file() else {}
    )
    results = {
        "overall": aggregate(bench.edits, judgments, metrics, judged),
        "by_edit_type": {t: aggregate(edits, judgments, metrics, judged) for t, edits in by_type.items()},
        "config": {
            "model": settings.model,
            "benchmark": bench.full_name,
            "dataset_dir": str(settings.dataset_dir),
            "split": SPLIT,
            "judge": settings.judge,
            **judge_metadata(settings),
            "yes_threshold": _oracle_threshold() if settings.judge == "oracle" else None,
            "generation": {k: v for k, v in generation.as_dict().items() if k not in ("model", "benchmark")},
            "reward_condition": recorded.get("reward_condition"),
            "batch_size": settings.batch_size,
            "attention": settings.attention,
            "devices": jax.device_count(),  # the devices (of every host) that generated the edits
            "hosts": jax.process_count(),
            "limit": settings.limit,
            "clip_model": settings.clip_model,
            "dino_model": settings.dino_model,
            "versions": versions_info(),
        },
        "run": stats,
    }
    grids = _write_grids(folder, by_type)
    rows = [_report_row(folder, e, judgments.get(e.index), metrics[e.index]) for e in bench.edits]
    tiny = max(open_rgb(folder.image_path(bench.edits[0])).size) < 128
    report.write_report(
        out / "report.html",
        results,
        rows,
        title=f"{to_path(settings.model).name} on {bench.full_name}",
        grids=grids,
        tiny_images=tiny,
    )
    stats["seconds"] = round(time.perf_counter() - start, 2)
    report.atomic_write_json(out / "results.json", results)
    overall = results["overall"]
    summary = ", ".join(
        f"{p} {100 * overall[f'{p}_yes']:.1f}% / {overall[f'{p}_score']:.2f}"
        for p in PERSPECTIVES
        if overall[f"{p}_yes"] is not None
    )
    log(f"wrote {out / 'results.json'} and {out / 'report.html'}" + (f": {summary}" if summary else ""))
    return results


def judge_metadata(settings: EvalSettings) -> dict:
    """results.json's judge_model, judge_protocol and judge_details (prompt hashes, never prompt text)."""
    if settings.judge != "gpt":
        return {"judge_model": None, "judge_protocol": None, "judge_details": None}
    return evaluators.gpt_metadata(settings.judge_config)


def _oracle_threshold() -> float:
    from rewardedit_jax.oracle import YES_THRESHOLD

    return YES_THRESHOLD


def _type_order(edit_type: str) -> tuple:
    known = EDIT_TYPE_ORDER.index(edit_type) if edit_type in EDIT_TYPE_ORDER else len(EDIT_TYPE_ORDER)
    return known, edit_type


def _write_grids(folder: OutputFolder, by_type: Mapping[str, list[BenchmarkEdit]]) -> dict[str, str]:
    """One grid per edit type (source | edit | reference per edit) -> its path relative to the folder."""
    grids = {}
    for edit_type, edits in by_type.items():
        strips = []
        for edit in edits[:MAX_GRID_EDITS]:
            paths = [folder.input_path(edit), folder.image_path(edit)]
            if folder.bench.has_references:
                paths.append(folder.target_path(edit))
            strips.append([np.asarray(open_rgb(p)) for p in paths])
        relative = f"grids/{evaluators._safe(edit_type)}.png"
        report.atomic_write_png(folder.out / relative, report.make_grid(strips, cell=GRID_CELL))
        grids[edit_type] = relative
    return grids


def _report_row(folder: OutputFolder, edit: BenchmarkEdit, judgment, metrics: Mapping) -> dict:
    row = {
        "name": edit.name,
        "edit_type": edit.edit_type,
        "instruction": edit.instruction,
        "source": folder.relative(folder.input_path(edit)),
        "edited": folder.relative(folder.image_path(edit)),
        "judgment": judgment,
        "metrics": dict(metrics),
    }
    if folder.bench.has_references:
        row["target"] = folder.relative(folder.target_path(edit))
    return row
