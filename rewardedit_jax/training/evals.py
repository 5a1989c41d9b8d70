"""Evaluation during training: the evaluators of ``config.evals``, run on the EMA weights.

Each entry of ``config.evals`` (a ConfigDict of named evaluators, big_vision style; empty by default) is::

    config.evals.oracle = dict(type="oracle", every_steps=400, data="synthetic_edit/16px", num_edits=16,
                               steps=10)

with the keys of :data:`EVAL_DEFAULTS` (documented in ``configs/default.py``). At every multiple of
``every_steps`` and at the last step, the trainer (:func:`rewardedit_jax.training.trainer.train_and_evaluate`)
edits the first ``num_edits`` edits of the benchmark's ``test`` split with the jitted sampler
(:class:`rewardedit_jax.sampling.EditSampler`, loaded once from ``DIR/model`` and given the current EMA
weights, or the parameters without EMA), exactly as ``python -m rewardedit_jax.evaluate`` makes them (same
fitted sizes, edit i seeded with ``seed + i``, same batching), and scores them with the evaluator of its
``type`` (:mod:`rewardedit_jax.evaluators`, the scoring code the CLI uses):

- ``oracle``: the synthetic_edit ground-truth oracle: ``<perspective>_yes`` and ``<perspective>_score`` of
  following, preserving and quality;
- ``reference``: ``l1``, ``l2`` against the references, ``clip_i`` / ``clip_t`` with ``clip_model``,
  ``dino`` with ``dino_model``;
- ``gpt``: the LVLM judge (the project protocol; needs an API key in the environment), plus ``failed``.

Outputs: the numbers as ``eval/<name>/<metric>`` rows of ``DIR/metrics.jsonl`` and TensorBoard (and W&B)
scalars (with ``eval/<name>/seconds``, the evaluation's wall time), the grid (source | edit | reference) as
the TensorBoard (and W&B) image ``eval/<name>`` and ``DIR/eval/<step>/<name>/grid.png``, the edits and
fitted sources under ``images/`` and ``inputs/`` there, and ``results.json`` (summary, settings, per-edit
judgments).

Multi-host: every process takes part in gathering the weights; process 0 generates on its local devices,
scores and writes, the others wait at a barrier.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from rewardedit_jax import evaluators, parallel
from rewardedit_jax.evaluators import EVALUATOR_TYPES, EvaluationError
from rewardedit_jax.io import to_path
from rewardedit_jax.sampling import DTYPES, SCHEDULERS, resolve_dtype
from rewardedit_jax.training.sharding import ConfigError

log = logging.getLogger("rewardedit_jax.train")

# Every key of a config.evals entry and its default (configs/default.py documents them).
EVAL_DEFAULTS: dict[str, Any] = {
    "type": "",
    "every_steps": 0,
    "data": "",
    "data_dir": "",
    "num_edits": 16,
    "steps": 30,
    "text_guidance": 7.5,
    "image_guidance": 1.5,
    "seed": 42,
    "scheduler": "euler_ancestral",
    "resolution": 0,
    "batch_size": 8,
    "dtype": "auto",
    "clip_model": "",
    "dino_model": "",
    "judge_model": "",
    "judge_base_url": "",
}
GRID_CELL = 96
EVAL_DIR = "eval"


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """One checked ``config.evals`` entry."""

    name: str
    type: str
    every_steps: int
    data: str
    data_dir: str
    num_edits: int
    steps: int
    text_guidance: float
    image_guidance: float
    seed: int
    scheduler: str
    resolution: int
    batch_size: int
    dtype: str
    clip_model: str
    dino_model: str
    judge_model: str
    judge_base_url: str

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every_steps == 0 or step == total_steps

    def sampler_key(self) -> tuple[str, str]:
        return (self.resolved_dtype(), self.scheduler)

    def resolved_dtype(self) -> str:
        return resolve_dtype(self.dtype)


def check_evals(config) -> list[EvalSpec]:
    """The entries of ``config.evals``, checked without touching data; a bad entry is a one-line
    :class:`ConfigError` naming it."""
    evals = config.get("evals") or {}
    specs = []
    for name in evals.keys():
        where = f"config.evals.{name}"
        entry = evals[name]
        if not isinstance(entry, Mapping) and not hasattr(entry, "keys"):
            raise ConfigError(f"{where} must be a dict of evaluator settings (type, every_steps, data, ...)")
        unknown = sorted(set(entry.keys()) - set(EVAL_DEFAULTS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; the keys are {', '.join(EVAL_DEFAULTS)}")
        values = {**EVAL_DEFAULTS, **{k: entry[k] for k in entry.keys()}}
        if values["type"] not in EVALUATOR_TYPES:
            raise ConfigError(
                f"{where}.type must be one of {', '.join(EVALUATOR_TYPES)}; got {values['type']!r}"
            )
        for key in ("every_steps", "num_edits", "steps", "batch_size"):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{where}.{key} must be a positive integer; got {value!r}")
        if not isinstance(values["resolution"], int) or values["resolution"] < 0:
            raise ConfigError(
                f"{where}.resolution must be 0 (native) or a size; got {values['resolution']!r}"
            )
        seed = values["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(f"{where}.seed must be an integer in 0..{2**32 - 1}; got {seed!r}")
        for key in ("text_guidance", "image_guidance"):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"{where}.{key} must be a number; got {value!r}")
        for key in ("data", "data_dir", "clip_model", "dino_model", "judge_model", "judge_base_url"):
            if not isinstance(values[key], str):
                raise ConfigError(f"{where}.{key} must be a string; got {values[key]!r}")
        if not values["data"]:
            raise ConfigError(
                f"{where}.data is missing: name a benchmark (synthetic_edit[/CONFIG] or real_edit)"
            )
        benchmark = str(values["data"]).partition("/")[0]
        if benchmark not in evaluators.BENCHMARKS:
            raise ConfigError(
                f"{where}.data must be one of {', '.join(evaluators.BENCHMARKS)} (optionally /CONFIG); "
                f"got {values['data']!r}"
            )
        if values["type"] == "oracle" and benchmark != "synthetic_edit":
            raise ConfigError(
                f"{where}: the oracle needs synthetic_edit's ground truth; got {values['data']!r}"
            )
        if values["scheduler"] not in SCHEDULERS:
            raise ConfigError(f"{where}.scheduler must be one of {', '.join(SCHEDULERS)}")
        if values["dtype"] not in DTYPES:
            raise ConfigError(f"{where}.dtype must be one of {', '.join(DTYPES)}")
        for key in ("clip_model", "dino_model"):
            if values[key] and values["type"] != "reference":
                raise ConfigError(f"{where}.{key} applies to type 'reference' only")
            if values[key] and not os.path.isdir(os.path.expanduser(values[key])):
                raise ConfigError(f"{where}.{key}: {values[key]} is not a folder")
        for key in ("judge_model", "judge_base_url"):
            if values[key] and values["type"] != "gpt":
                raise ConfigError(f"{where}.{key} applies to type 'gpt' only")
        if values["type"] == "gpt":
            from rewardedit_jax.judge import api_key_from_env

            if not api_key_from_env(False):
                raise ConfigError(f"{where}: the gpt evaluator needs OPENAI_API_KEY in the environment")
        specs.append(
            EvalSpec(
                name=str(name),
                **{
                    k: (type(EVAL_DEFAULTS[k])(v) if k != "type" else str(v))
                    for k, v in values.items()
                    if k in EVAL_DEFAULTS
                },
            )
        )
    return specs


def data_dir_of(spec: EvalSpec, config) -> str:
    return spec.data_dir or config.data.data_dir or os.environ.get("TFDS_DATA_DIR") or ""


def check_eval_data(config) -> None:
    """Each evaluator's benchmark is built and has what its type needs; else a one-line ConfigError."""
    for spec in check_evals(config):
        _benchmark(spec, config)


def _benchmark(spec: EvalSpec, config) -> evaluators.Benchmark:
    where = f"config.evals.{spec.name}"
    data_dir = data_dir_of(spec, config)
    if not data_dir:
        raise ConfigError(f"{where}.data_dir is empty and so are config.data.data_dir and $TFDS_DATA_DIR")
    try:
        bench = evaluators.Benchmark(
            spec.data.partition("/")[0], evaluators.resolve_benchmark(spec.data, data_dir), spec.num_edits
        )
    except EvaluationError as e:
        raise ConfigError(f"{where}.data: {e}") from None
    if not bench.edits:
        raise ConfigError(f"{where}.data: the {evaluators.SPLIT} split of {bench.full_name} is empty")
    if spec.type in ("oracle", "reference") and not bench.has_references:
        raise ConfigError(
            f"{where}: type {spec.type!r} needs reference edits, which {bench.full_name} has not"
        )
    return bench


class TrainingEvals:
    """The evaluators of a training run: ``run(step, state, writer)`` after each optimizer step."""

    def __init__(self, config, workdir, total_steps: int):
        self.specs = check_evals(config)
        self.workdir = to_path(workdir)
        self.total_steps = total_steps
        self.is_main = jax.process_index() == 0
        self._config = config
        self._benches: dict[str, evaluators.Benchmark] = {}
        self._evaluators: dict[str, evaluators.Evaluator] = {}
        self._samplers: dict[tuple[str, str], Any] = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def due(self, step: int) -> list[EvalSpec]:
        return [s for s in self.specs if s.due(step, self.total_steps)]

    def run(self, step: int, state, writer) -> float:
        """Run the evaluators due at ``step`` on ``state``'s EMA weights; returns the seconds spent."""
        due = self.due(step)
        if not due:
            return 0.0
        start = time.perf_counter()
        params = eval_params(state)  # every process takes part (a collective in a multi-host job)
        if self.is_main:
            fresh: set[tuple[str, str]] = set()
            for spec in due:
                sampler = self._sampler(spec)
                if spec.sampler_key() not in fresh:
                    sampler.set_unet_params(params)
                    fresh.add(spec.sampler_key())
                try:
                    self._evaluate(spec, step, sampler, writer)
                except EvaluationError as e:  # e.g. the judge gave up: training goes on
                    log.error("eval %s at step %d failed: %s", spec.name, step, e)
        del params
        parallel.barrier(f"rewardedit_jax.eval.{step}")
        return time.perf_counter() - start

    # --- process 0 ------------------------------------------------------------------------------------

    def _sampler(self, spec: EvalSpec):
        key = spec.sampler_key()
        if key not in self._samplers:
            import jax.numpy as jnp

            from rewardedit_jax import workdir as workdir_lib
            from rewardedit_jax.sampling import EditSampler
            from rewardedit_jax.training.trainer import _load_model_dir

            dtype = jnp.dtype(spec.resolved_dtype())
            models = _load_model_dir(self.workdir / workdir_lib.MODEL, dtype)
            self._samplers[key] = EditSampler(
                models.unet,
                models.vae,
                models.text_encoder,
                models.tokenizer,
                models.scheduler_config,
                scheduler=spec.scheduler,
                dtype=dtype,
                mesh=parallel.local_mesh(),
                log=lambda message: log.info("eval: %s", message),
            )
        return self._samplers[key]

    def _evaluator(self, spec: EvalSpec) -> evaluators.Evaluator:
        if spec.name not in self._evaluators:
            judge_config = None
            if spec.type == "gpt":
                from rewardedit_jax.judge import JudgeConfig

                judge_config = JudgeConfig(
                    model=spec.judge_model or None,
                    base_url=spec.judge_base_url or None,
                    cache_path=str(self.workdir / EVAL_DIR / "judge-cache.sqlite"),
                )
            self._evaluators[spec.name] = evaluators.make_evaluator(
                spec.type, clip_model=spec.clip_model, dino_model=spec.dino_model, judge_config=judge_config
            )
        return self._evaluators[spec.name]

    def _evaluate(self, spec: EvalSpec, step: int, sampler, writer) -> None:
        from rewardedit_jax import report

        start = time.perf_counter()
        if spec.name not in self._benches:
            self._benches[spec.name] = _benchmark(spec, self._config)
        bench = self._benches[spec.name]
        out = self.workdir / EVAL_DIR / str(step) / evaluators._safe(spec.name)
        evaluator = self._evaluator(spec)
        jobs = evaluators.edit_jobs(  # the sources, sizes and seeds of `evaluate`
            bench,
            bench.edits,
            resolution=evaluators.benchmark_resolution(bench.kind, spec.resolution or None),
            multiple=sampler.vae_factor,
            seed_of=lambda edit: evaluators.edit_seed(spec.seed, edit),
        )
        edited: dict[int, np.ndarray] = {}
        parallel.generate(
            sampler,
            jobs,
            lambda job, image: edited.__setitem__(job.key.index, image),
            batch_size=spec.batch_size,
            num_steps=spec.steps,
            text_guidance=spec.text_guidance,
            image_guidance=spec.image_guidance,
        )
        generated_s = time.perf_counter() - start
        records = []
        for job in jobs:
            edit = job.key
            source_path, edited_path = (
                out / "inputs" / f"{edit.name}.png",
                out / "images" / f"{edit.name}.png",
            )
            report.atomic_write_png(source_path, job.image)
            report.atomic_write_png(edited_path, edited[edit.index])
            records.append(
                evaluators.EditRecord(
                    edit,
                    source=bench.source(edit) if evaluator.needs_source else None,
                    edited=edited[edit.index],
                    target=bench.target(edit) if bench.has_references else None,
                    source_path=str(source_path),
                    edited_path=str(edited_path),
                )
            )
        judgments, metrics = evaluator.score(records)
        summary = evaluator.summary(records, judgments, metrics)
        strips = []  # source (fitted) | edit | reference
        for job, r in zip(jobs, records):
            reference = [] if r.target is None else [np.asarray(r.target.convert("RGB"))]
            strips.append([job.image, r.edited, *reference])
        grid = report.make_grid(strips, cell=GRID_CELL)
        report.atomic_write_png(out / "grid.png", grid)
        seconds = time.perf_counter() - start
        rows = {f"eval/{spec.name}/{k}": float(v) for k, v in summary.items() if k != "n"}
        rows[f"eval/{spec.name}/seconds"] = seconds
        writer.write(step, rows)
        writer.image(step, f"eval/{spec.name}", grid)
        report.atomic_write_json(
            out / "results.json",
            {
                "step": step,
                "name": spec.name,
                "type": spec.type,
                "benchmark": bench.full_name,
                "overall": summary,
                "settings": dataclasses.asdict(spec),
                "seconds": {"generate": round(generated_s, 3), "total": round(seconds, 3)},
                "edits": [
                    {
                        "index": r.edit.index,
                        "name": r.edit.name,
                        "instruction": r.edit.instruction,
                        "edit_type": r.edit.edit_type,
                        "judgment": judgments.get(r.edit.index),
                        "metrics": metrics.get(r.edit.index, {}),
                    }
                    for r in records
                ],
            },
        )
        shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k not in ("n", "failed"))
        log.info("eval %s at step %d (%d edits, %.1f s): %s", spec.name, step, len(records), seconds, shown)


def eval_params(state):
    """The weights to evaluate (the EMA when the run keeps one), on the host; a collective across
    processes in a multi-host job."""
    tree = state["ema"] if state.get("ema") is not None else state["params"]
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
