"""Benchmark an editing model: ``python -m rewardedit_jax.evaluate`` and ``evaluate(...)``.

    python -m rewardedit_jax.evaluate --model PATH --benchmark real_edit|synthetic_edit[/CONFIG] \\
        --data-dir D --out OUTDIR [--judge gpt|oracle|none] [--reward 5,5,5] [--steps 30] \\
        [--reward-guidance G [--low-reward 0,0,0] [--low-feedback TEXT]] \\
        [--batch-size 16] [--limit N] [--clip-model CLIP_DIR] [--dino-model DINO_DIR]

Runs the Real-Edit protocol of the paper (docs/sources.md, "Real-Edit evaluation protocol") end to end:
every edit of the benchmark's
``test`` split is generated with the jitted sampler (:mod:`rewardedit_jax.sampling`, official settings by
default: Euler ancestral, 30 steps, text guidance 7.5, image guidance 1.5; edit i seeded with 42 + i, i.e.
independent noise per edit as the official ``eval.py`` draws it, or 42 for all with ``--shared-noise``),
judged from the three perspectives (instruction following, detail preserving, generation quality) as a
yes/no and a 0..5 score, and summarized as the yes-ratio and the mean score of each perspective, overall
and per edit type.

- ``--judge gpt``: the LVLM judge of :mod:`rewardedit_jax.judge` in eval mode (``evaluate_edits``);
  ``--judge oracle`` (``synthetic_edit`` only): :mod:`rewardedit_jax.oracle`, the same judgments computed
  from the ground truth; ``--judge none``: generate only. Default: gpt for real_edit, oracle for synthetic.
- Inputs are fitted as the official protocol does: real_edit to :func:`rewardedit_jax.sampling.edit_size`
  (long side about ``--resolution`` = 512, sides multiples of 64, centre crop + LANCZOS), exactly as
  ``python -m rewardedit_jax.edit`` does; synthetic_edit keeps its native size (``--resolution`` rescales it),
  sides multiples of the VAE factor.
- Edits are grouped by fitted size and sampled in calls of ``--batch-size`` edits per device (the last call of
  a group padded), sharded over all local devices and, in a multi-host job, spread over the hosts
  (:mod:`rewardedit_jax.parallel`; process 0 judges and writes the results), so each size compiles exactly
  once per host and the edits do not depend on the number of devices.
- With references (synthetic_edit's ``target_image``) L1 and L2 against the target are reported, with
  ``--dino-model`` DINO similarity (edited vs target), and with ``--clip-model`` CLIP-I (edited vs target)
  and CLIP-T (edited vs instruction), as MagicBrush defines them (:mod:`rewardedit_jax.reference_metrics`).

Output folder (docs/evaluation.md): ``images/<index>_<id>.png`` (the edits), ``inputs/`` (the fitted
sources), ``targets/`` (references), ``grids/<edit type>.png``, ``judgments.jsonl`` and ``metrics.jsonl``
(append-only, one line per finished edit), ``generation.json`` (the generation settings), ``results.json``
and ``report.html`` (written atomically). A rerun resumes: existing edits and judgments are reused (a
judgment only while its edited image is unchanged); a rerun with other generation settings is an error.
``--model``, ``--data-dir`` and ``--out`` may be remote URLs (``gs://...``, :mod:`rewardedit_jax.io`), except
that ``--judge gpt`` needs a local ``--out`` (its sqlite cache and the judge's image reads are local).
``--model`` may also be a Hugging Face Hub id, ``owner/name[@revision]``, resolved (and downloaded into the
Hugging Face cache) after every other flag is checked and recorded pinned to its commit, ``owner/name@<sha>``
(:mod:`rewardedit_jax.hub`).

The package: :mod:`~rewardedit_jax.evaluate.settings` (:class:`EvalSettings`, every flag checked once,
before anything loads), :mod:`~rewardedit_jax.evaluate.generation` (the missing edits),
:mod:`~rewardedit_jax.evaluate.scoring` (the judge and the reference metrics: the evaluator classes of
:mod:`rewardedit_jax.evaluators` that training uses, with the output folder's cache),
:mod:`~rewardedit_jax.evaluate.results` (results.json, the report and grids),
:mod:`~rewardedit_jax.evaluate.outputs` (the folder's layout and per-edit records),
:mod:`~rewardedit_jax.evaluate.runner` (:func:`evaluate`) and :mod:`~rewardedit_jax.evaluate.command`
(the flags and ``main``).
"""

from rewardedit_jax.evaluate.command import build_parser, main, run_cli
from rewardedit_jax.evaluate.outputs import JsonlStore
from rewardedit_jax.evaluate.runner import evaluate, run_evaluation
from rewardedit_jax.evaluate.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_JUDGE,
    GENERATION_KEYS,
    JUDGES,
    EvalSettings,
    GenerationSettings,
)
from rewardedit_jax.evaluators import (
    BENCHMARKS,
    DEFAULT_SYNTHETIC_CONFIG,
    PERSPECTIVES,
    SPLIT,
    Benchmark,
    BenchmarkEdit,
    EvaluationError,
    aggregate,
    fit_image,
    resolve_benchmark,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_JUDGE",
    "DEFAULT_SYNTHETIC_CONFIG",
    "GENERATION_KEYS",
    "JUDGES",
    "PERSPECTIVES",
    "SPLIT",
    "Benchmark",
    "BenchmarkEdit",
    "EvalSettings",
    "EvaluationError",
    "GenerationSettings",
    "JsonlStore",
    "aggregate",
    "build_parser",
    "evaluate",
    "fit_image",
    "main",
    "resolve_benchmark",
    "run_cli",
    "run_evaluation",
]
