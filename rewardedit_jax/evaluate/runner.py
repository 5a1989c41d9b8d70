"""One evaluation from start to end: :func:`evaluate` (the Python API) and :func:`run_evaluation`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from rewardedit_jax.evaluate.generation import ensure_side_files, generate_missing
from rewardedit_jax.evaluate.outputs import OutputFolder, sha256
from rewardedit_jax.evaluate.results import write_results
from rewardedit_jax.evaluate.scoring import Scoring
from rewardedit_jax.evaluate.settings import EvalSettings, check_generation_settings
from rewardedit_jax.evaluators import SPLIT, Benchmark, EvaluationError
from rewardedit_jax.io import makedirs


def _log(message: str) -> None:
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


def evaluate(
    model: str | os.PathLike,
    benchmark: str,
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = _log,
    **options,
) -> dict | None:
    """Generate, judge and summarize the edits of ``benchmark``; returns the ``results.json`` dict.

    ``model``: a diffusers pipeline folder, Flax model directory or training workdir, or a Hugging Face Hub
    id ``owner/name[@revision]`` (:func:`rewardedit_jax.convert.load_pipeline`; ``results.json`` records it
    pinned to the commit it resolved to). ``benchmark``: ``real_edit`` or
    ``synthetic_edit[/CONFIG]``, built in ``data_dir``. The keyword ``options`` are those of
    :meth:`EvalSettings.create` and mirror the flags: ``judge``: ``gpt``, ``oracle`` or ``none``
    (default: gpt for real_edit, oracle for synthetic_edit). ``judge_config``: the GPT judge's
    :class:`rewardedit_jax.judge.JudgeConfig` (default cache ``OUT/judge-cache.sqlite``). ``resolution``:
    long side of the fitted input (default 512 for real_edit, the native size for synthetic_edit).
    ``reward`` / ``feedback``: a reward model's condition (default 5,5,5 and "None; None; None"; an error for
    a stock model). ``reward_guidance``: a reward model's guidance scale away from the low-reward condition
    ``low_reward`` / ``low_feedback`` (:meth:`EditSampler.__call__`; default off). Edit i is seeded with
    ``seed + i`` (independent noise per edit, reproducible from the seed and the edit's index) unless
    ``shared_noise`` (every edit seeded with ``seed``); ``seed_per_edit=True`` names the default and
    ``seed_per_edit=False`` means ``shared_noise``. ``batch_size``: edits per device per sampler call.
    In a multi-host job every process calls this; each generates its share of the edits and process 0
    judges and writes the results (other processes return None). ``limit``: only the first N edits of the
    split. ``clip_model`` / ``dino_model``: local transformers folders or Hugging Face Hub ids
    ``owner/name[@revision]`` for the reference metrics (:mod:`rewardedit_jax.reference_metrics`; DINO
    needs references).
    ``compiler_options`` go to XLA (the tests use fast compilation); ``progress``: progress bars. Errors a
    user can fix raise :class:`EvaluationError` (one line).
    """
    start = time.perf_counter()
    settings = EvalSettings.create(model, benchmark, data_dir, out, **options)
    return run_evaluation(settings, log=log, start=start)


def run_evaluation(
    settings: EvalSettings, *, log: Callable[[str], None] | None = _log, start: float | None = None
) -> dict | None:
    """The evaluation ``settings`` describe (see :func:`evaluate`); ``start``: when it began (its
    ``perf_counter``, for the run's seconds in ``results.json``)."""
    log = log or (lambda message: None)
    start = time.perf_counter() if start is None else start
    bench = open_benchmark(settings)
    generation = settings.generation(bench.full_name)
    check_generation_settings(settings.out, generation)
    makedirs(settings.out)
    log(f"{bench.full_name}: {len(bench.edits)} edits -> {settings.out}")

    folder = OutputFolder(settings.out, bench)
    stats = {"edits": len(bench.edits), "generated": 0, "reused_images": 0, "compilations": 0}
    generate_missing(folder, settings, generation, stats, log)
    import jax

    if jax.process_index() != 0:  # a multi-host job: process 0 judges and writes the results
        log(f"process {jax.process_index()}: generated its share; process 0 judges and writes the results")
        return None
    ensure_side_files(folder)
    hashes = {e.index: sha256(folder.image_path(e)) for e in bench.edits}
    scoring = Scoring(folder, settings, log)
    judgments = scoring.judgments(hashes, stats)
    metrics = scoring.metrics(hashes)
    return write_results(folder, settings, generation, judgments, metrics, stats, start=start, log=log)


def open_benchmark(settings: EvalSettings) -> Benchmark:
    """The benchmark's first ``limit`` edits; the checks that need its records (before any model load)."""
    bench = Benchmark(settings.kind, settings.dataset_dir, settings.limit)
    if not bench.edits:
        raise EvaluationError(f"{bench.full_name}: the {SPLIT} split is empty")
    if settings.dino_model is not None and not bench.has_references:
        raise EvaluationError(
            f"--dino-model compares edits with reference edits, which {bench.full_name} has not; "
            "use it with synthetic_edit"
        )
    return bench
