"""Benchmark an editing model: ``python -m rewardedit_jax.evaluate`` and ``evaluate(...)``.

    python -m rewardedit_jax.evaluate --model PATH --benchmark real_edit|synthetic_edit[/CONFIG] \\
        --data-dir D --out OUTDIR [--judge gpt|oracle|none] [--reward 5,5,5] [--steps 30] \\
        [--reward-guidance G [--low-reward 0,0,0] [--low-feedback TEXT]] \\
        [--batch-size 8] [--limit N] [--clip-model CLIP_DIR] [--dino-model DINO_DIR]

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
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from rewardedit_jax import evaluators, reference_metrics, report
from rewardedit_jax.edit import DTYPE_CHOICES, SCHEDULER_CHOICES, add_sampling_arguments
from rewardedit_jax.evaluators import (  # noqa: F401  (the CLI's names for the shared definitions)
    BENCHMARKS,
    DEFAULT_SYNTHETIC_CONFIG,
    PERSPECTIVES,
    SPLIT,
    Benchmark,
    BenchmarkEdit,
    EvaluationError,
    _one_line,
    _safe,
    _text,
    _versions,
    aggregate,
    fit_image,
    resolve_benchmark,
)
from rewardedit_jax.io import AppendFile, PathError, check_bucket, is_remote, makedirs, resolve, to_path
from rewardedit_jax.parallel import add_distributed_arguments, initialize_distributed

JUDGES = ("gpt", "oracle", "none")
DEFAULT_JUDGE = {"real_edit": "gpt", "synthetic_edit": "oracle"}
DEFAULT_BATCH_SIZE = 8
MAX_GRID_EDITS = 100  # edits shown per grid (the first ones of the type)
GRID_CELL = 128
# The order edit types are reported in (others follow alphabetically).
EDIT_TYPE_ORDER = (
    ("Local", "Remove", "Add", "Texture", "Background", "Global", "Style")  # Real-Edit, as in the paper
    + ("recolor", "remove", "add", "move", "background")  # synthetic_edit
)
# Settings whose change makes earlier edits in the output folder invalid.
GENERATION_KEYS = (
    "model",
    "model_step",
    "benchmark",
    "steps",
    "text_guidance",
    "image_guidance",
    "seed",
    "seed_per_edit",
    "resolution",
    "scheduler",
    "dtype",
    "reward",
    "feedback",
    "reward_guidance",
    "low_reward",
    "low_feedback",
)


def _log(message: str) -> None:
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------
# Settings (the benchmark: rewardedit_jax.evaluators).


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    model: str
    benchmark: str
    steps: int
    text_guidance: float
    image_guidance: float
    seed: int
    resolution: int | None  # None: native (synthetic_edit)
    scheduler: str
    dtype: str
    reward: tuple[float, float, float] | None  # None: the model's default (5,5,5 for reward models)
    feedback: str | None
    # Edit i is seeded with seed + i (its index in the split): independent noise per edit, as the official
    # eval.py draws fresh noise for every edit. False (--shared-noise): every edit is seeded with seed.
    seed_per_edit: bool = True
    model_step: int | None = None  # a training workdir's checkpoint step (its latest unless one is named)
    reward_guidance: float | None = None  # None: off; then low_reward and low_feedback are None too
    low_reward: tuple[float, float, float] | None = None
    low_feedback: str | None = None

    def seed_of(self, edit: BenchmarkEdit) -> int:
        return evaluators.edit_seed(self.seed, edit) if self.seed_per_edit else self.seed

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("reward", "low_reward"):
            out[key] = None if out[key] is None else list(out[key])
        return out


def _parse_reward(reward, flag: str = "--reward") -> tuple[float, float, float] | None:
    if reward is None:
        return None
    from rewardedit_jax.edit import EditError, parse_scores

    try:
        if isinstance(reward, str):
            return parse_scores(reward, flag)
        return parse_scores(",".join(str(float(s)) for s in reward), flag)
    except (EditError, TypeError, ValueError) as e:
        raise EvaluationError(str(e) if isinstance(e, EditError) else f"bad {flag} {reward!r}") from None


def _workdir_step(model: epath.Path) -> int | None:
    """The checkpoint step a training workdir (or one of its checkpoints) is evaluated at; else None."""
    from rewardedit_jax.convert import training_source

    found = training_source(model)
    if found is None:
        return None
    workdir, step = found
    if step is None:
        from rewardedit_jax.training.workdir import latest_step

        step = latest_step(workdir)
    return step


def _check_generation_settings(out: epath.Path, settings: GenerationSettings) -> None:
    """Refuse to mix edits made with other generation settings into one output folder."""
    path = out / "generation.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())["requested"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EvaluationError(f"{path}: unreadable; remove it or use another --out") from None
    current = settings.as_dict()
    # Folders written before these settings existed (their model step was not recorded: taken as equal).
    saved = {
        "seed_per_edit": False,
        "model_step": current["model_step"],
        **dict.fromkeys(("reward_guidance", "low_reward", "low_feedback")),
        **saved,
    }
    changed = [k for k in GENERATION_KEYS if saved.get(k) != current[k]]
    if changed:
        what = "; ".join(f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise EvaluationError(f"{out} holds edits made with other settings ({what}); use another --out")


# ----------------------------------------------------------------------------------------------------
# Append-only stores.


class JsonlStore:
    """An append-only JSON-lines file of per-edit records; a truncated last line (a crash) is ignored."""

    def __init__(self, path: epath.Path):
        self.path = path
        self.records: list[dict] = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    self.records.append(record)
        self._file = None

    def find(self, **match) -> dict | None:
        """The last record whose fields equal ``match``."""
        for record in reversed(self.records):
            if all(record.get(k) == v for k, v in match.items()):
                return record
        return None

    def append(self, record: dict) -> None:
        if self._file is None:
            self._file = AppendFile(self.path)
            if not self._file.at_line_start:
                self._file.write("\n")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.records.append(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _sha256(path: epath.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


# ----------------------------------------------------------------------------------------------------
# The run.


class _Run:
    """One evaluation: the output folder, the benchmark, and the steps of :func:`evaluate`."""

    def __init__(self, out: epath.Path, bench: Benchmark, settings: GenerationSettings, log, progress: bool):
        self.out, self.bench, self.settings, self.log, self.progress = out, bench, settings, log, progress
        self.stats = {"edits": len(bench.edits), "generated": 0, "reused_images": 0, "compilations": 0}
        self.reward_condition: dict | None = None

    def image_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "images" / f"{edit.name}.png"

    def input_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "inputs" / self.bench.input_name(edit)

    def target_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "targets" / f"{edit.name}.png"

    # --- generation ---------------------------------------------------------------------------------------

    def generate(self, *, reward_requested: bool, batch_size: int, compiler_options: dict | None) -> None:
        """Make the missing edits, sharded over this host's devices; in a multi-host job each host makes its
        share of each size group (:mod:`rewardedit_jax.parallel`) and process 0 counts them all."""
        from rewardedit_jax import parallel
        from rewardedit_jax.edit import write_png_atomically

        hosts, host = parallel.hosts()
        missing = np.asarray([not self.image_path(e).is_file() for e in self.bench.edits])
        # Process 0's view, taken before any host writes an edit: every host works on the same list.
        missing = parallel.broadcast_from_first(missing)
        pending = [e for e, m in zip(self.bench.edits, missing) if m]
        self.stats["reused_images"] = len(self.bench.edits) - len(pending)
        if self.stats["reused_images"]:
            self.log(f"reusing {self.stats['reused_images']} edits already in {self.out / 'images'}")
        if not pending:
            return
        sampler = self._load_sampler(reward_requested, compiler_options)
        s = self.settings
        multiple = sampler.vae_factor
        fitted: dict[str, np.ndarray] = {}  # source key -> fitted source
        groups: dict[tuple[int, int], int] = {}
        for edit in pending:
            if edit.source_key not in fitted:
                image = self.bench.source(edit)
                size = self.bench.fitted_size(image.width, image.height, s.resolution, multiple)
                fitted[edit.source_key] = fit_image(image, size)
            source = fitted[edit.source_key]
            if host == 0 and not self.input_path(edit).is_file():
                write_png_atomically(source, self.input_path(edit))
            groups[source.shape[:2]] = groups.get(source.shape[:2], 0) + 1
        sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sorted(groups.items()))
        devices = parallel.sampler_devices(sampler)
        where = f"{devices} device{'s' * (devices > 1)}" + (f" on each of {hosts} hosts" if hosts > 1 else "")
        self.log(
            f"generating {len(pending)} edits in {len(groups)} size{'s' * (len(groups) > 1)}: {sizes} "
            f"({where})"
        )
        kwargs = {}
        if sampler.has_reward:
            kwargs = {"reward_scores": s.reward, "feedback": s.feedback}
        if s.reward_guidance is not None:
            kwargs.update(
                reward_guidance=s.reward_guidance, low_reward_scores=s.low_reward, low_feedback=s.low_feedback
            )
        jobs = [parallel.EditJob(fitted[e.source_key], e.instruction, s.seed_of(e), e) for e in pending]
        share = sum(len(range(host, n, hosts)) for n in groups.values())
        compiles_before = sampler.compile_count
        start = time.perf_counter()
        with _progress(share, "generating", self.progress) as bar:
            made = parallel.generate(
                sampler,
                jobs,
                lambda job, image: write_png_atomically(image, self.image_path(job.key)),
                batch_size=batch_size,
                hosts=hosts,
                host=host,
                on_call=bar.update,
                num_steps=s.steps,
                text_guidance=s.text_guidance,
                image_guidance=s.image_guidance,
                **kwargs,
            )
        compilations = sampler.compile_count - compiles_before
        # Every host's count; also the barrier after which process 0 finds every edit written.
        counts = parallel.gather(np.asarray([made, compilations], np.int64))
        self.stats["generated"] = int(counts[:, 0].sum())
        self.stats["compilations"] = int(counts[:, 1].max())  # per host: each size compiles once
        lost = [e for e in pending if not self.image_path(e).is_file()] if hosts > 1 and host == 0 else []
        if lost:
            raise EvaluationError(
                f"{self.out / 'images'} lacks {len(lost)} edits other hosts made (e.g. {lost[0].name}.png); "
                "--out must be a folder every host writes to (a shared file system or gs://)"
            )
        self.log(
            f"generated {self.stats['generated']} edits in {time.perf_counter() - start:.1f} s "
            f"({self.stats['compilations']} compilations)"
        )

    def _load_sampler(self, reward_requested: bool, compiler_options: dict | None):
        import jax
        import jax.numpy as jnp

        from rewardedit_jax import parallel
        from rewardedit_jax.convert import ConversionError, load_pipeline
        from rewardedit_jax.sampling import EditSampler
        from rewardedit_jax.schedule import ScheduleError

        s = self.settings
        dtype = jnp.dtype(s.dtype)
        start = time.perf_counter()
        self.log(f"loading {s.model} ({s.dtype}, {jax.default_backend()})")
        try:
            pipeline = load_pipeline(s.model, param_dtype=dtype, compute_dtype=dtype)
        except (ConversionError, PathError) as e:
            raise EvaluationError(str(e)) from None
        self.log(f"loaded in {time.perf_counter() - start:.1f} s")
        has_reward = bool(pipeline.unet.has_reward)
        if not has_reward and reward_requested:
            given = {"--reward": s.reward, "--feedback": s.feedback, "--reward-guidance": s.reward_guidance}
            flags = ", ".join(f for f, v in given.items() if v is not None)
            raise EvaluationError(f"{s.model} is not a reward model; {flags} apply to reward models only")
        try:
            sampler = EditSampler.from_pipeline(
                pipeline,
                scheduler=s.scheduler,
                dtype=dtype,
                mesh=parallel.local_mesh(),  # the batch sharded over this host's devices
                log=self.log,
                compiler_options=compiler_options,
            )
        except ScheduleError as e:
            raise EvaluationError(f"{s.model}: {e}") from None
        if has_reward:
            from rewardedit_jax.models.reward import BEST_FEEDBACK, BEST_SCORES

            self.reward_condition = {
                "reward": list(s.reward or BEST_SCORES),
                "feedback": BEST_FEEDBACK if s.feedback is None else s.feedback,
            }
            if s.reward_guidance is not None:
                self.reward_condition["reward_guidance"] = {
                    "scale": s.reward_guidance,
                    "low_reward": list(s.low_reward),
                    "low_feedback": s.low_feedback,
                }
        if jax.process_index() == 0:
            report.atomic_write_json(
                self.out / "generation.json",
                {
                    "requested": s.as_dict(),
                    "reward_condition": self.reward_condition,
                    "versions": _versions_info(),
                },
            )
        return sampler

    def ensure_side_files(self) -> None:
        """The fitted inputs (and targets) the report shows, for edits generated by an earlier run."""
        from rewardedit_jax.edit import write_png_atomically

        for edit in self.bench.edits:
            if not self.input_path(edit).is_file():
                with _open_rgb(self.image_path(edit)) as edited:
                    size = edited.size  # the fitted input has the edit's size
                write_png_atomically(fit_image(self.bench.source(edit), size), self.input_path(edit))
            if self.bench.has_references and not self.target_path(edit).is_file():
                write_png_atomically(np.asarray(self.bench.target(edit)), self.target_path(edit))

    # --- judging ------------------------------------------------------------------------------------------

    def judge(self, judge: str, judge_config, hashes: Mapping[int, str]) -> dict[int, dict]:
        """Per edit (by index): perspective -> {"answer", "score"}, and ``failed``: perspective -> reason."""
        if judge == "none":
            return {}
        store = JsonlStore(self.out / "judgments.jsonl")
        judge_name = "oracle" if judge == "oracle" else _gpt_judge_name(judge_config)
        judgments: dict[int, dict] = {}
        todo = []
        for edit in self.bench.edits:
            found = store.find(
                index=edit.index, id=edit.id, judge=judge_name, edited_sha256=hashes[edit.index]
            )
            if found is not None:
                judgments[edit.index] = found
            else:
                todo.append(edit)
        self.stats.update(judge=judge_name, reused_judgments=len(judgments), judged=len(todo))
        if judgments:
            self.log(f"reusing {len(judgments)} judgments ({judge_name}) from {store.path}")
        try:
            if todo and judge == "oracle":
                self._judge_oracle(todo, judge_name, hashes, store, judgments)
            elif todo:
                self._judge_gpt(todo, judge_name, judge_config, hashes, store, judgments)
        finally:
            store.close()
        return judgments

    def _record(self, edit: BenchmarkEdit, judge_name: str, sha: str, verdicts: Mapping) -> dict:
        return {"index": edit.index, "id": edit.id, "judge": judge_name, "edited_sha256": sha, **verdicts}

    def _judge_oracle(self, todo, judge_name, hashes, store: JsonlStore, judgments) -> None:
        with _progress(len(todo), "judging (oracle)", self.progress) as bar:
            for edit in todo:
                edited = _open_rgb(self.image_path(edit))
                verdicts = evaluators.oracle_verdicts(
                    self.bench.source(edit), edited, self.bench.target(edit), edit.instruction
                )
                record = self._record(edit, judge_name, hashes[edit.index], verdicts)
                store.append(record)
                judgments[edit.index] = record
                bar.update(1)

    def _judge_gpt(self, todo, judge_name, judge_config, hashes, store: JsonlStore, judgments) -> None:
        from rewardedit_jax.judge import JudgeFatalError, evaluate_edits

        official, sizes = judge_config.protocol == "official", {}
        items = [
            {
                "id": edit.name,
                "source": str(self.input_path(edit)),
                "edited": str(self.image_path(edit)),
                "instruction": edit.instruction,
                "sent_size": self._official_judge_size(edit, sizes) if official else None,
            }
            for edit in todo
        ]
        self.log(
            f"judging {len(items)} edits with {judge_config.model}, {judge_config.protocol} protocol "
            f"(cache {judge_config.cache_path})"
        )
        try:
            result = evaluate_edits(items, judge_config, progress=self.progress)
        except JudgeFatalError as e:
            raise EvaluationError(f"judge: {e}") from None
        failed = 0
        for edit, item in zip(todo, result.items):
            verdicts, failures = evaluators.gpt_verdicts(item)
            record = self._record(edit, judge_name, hashes[edit.index], verdicts)
            if failures is None:
                store.append(record)  # failed edits are not stored: the next run asks again
            else:
                record["failed"] = failures
                failed += 1
            judgments[edit.index] = record
        self.log(f"judged {len(items)} edits, {failed} failed, ${result.cost_usd:.4f}")

    def _official_judge_size(self, edit: BenchmarkEdit, memo: dict) -> tuple[int, int]:
        """The official eval.py's judge size: height = the resolution (512), the original photo's aspect."""
        from rewardedit_jax.judge.official import OFFICIAL_HEIGHT, official_size

        name = self.bench.input_name(edit)
        if name not in memo:  # source photo -> its size (Real-Edit: 7 edits per photo)
            memo[name] = self.bench.source(edit).size
        return official_size(*memo[name], self.settings.resolution or OFFICIAL_HEIGHT)

    # --- reference metrics (definitions: rewardedit_jax.reference_metrics) ---------------------------------

    def metrics(
        self, clip_model: str | None, hashes: Mapping[int, str], dino_model: str | None = None
    ) -> dict[int, dict]:
        """Per edit: L1, L2 (and DINO, with ``dino_model``) against the target when the benchmark has
        references; CLIP-T (and CLIP-I with references) with ``clip_model``. Model scores are cached in
        ``metrics.jsonl`` by (edit, model folder, sha256 of the edited image)."""
        out: dict[int, dict] = {e.index: {} for e in self.bench.edits}
        if self.bench.has_references:
            for edit in self.bench.edits:
                out[edit.index].update(
                    evaluators.pixel_metrics(_open_rgb(self.image_path(edit)), self.bench.target(edit))
                )
        try:
            if clip_model is not None:
                names = ("clip_i", "clip_t")
                self._model_metrics("clip_model", clip_model, names, hashes, out, self._clip_scores)
            if dino_model is not None and self.bench.has_references:
                self._model_metrics("dino_model", dino_model, ("dino",), hashes, out, self._dino_scores)
        except reference_metrics.MetricModelError as e:
            raise EvaluationError(str(e)) from None
        return out

    def _model_metrics(
        self, field: str, model: str, names: tuple[str, ...], hashes, out: dict[int, dict], scores
    ) -> None:
        """Fill ``out`` with one model's scores ``names``: cached ones, then ``scores(model)(edits)``."""
        store = JsonlStore(self.out / "metrics.jsonl")
        todo = []
        for edit in self.bench.edits:
            found = store.find(index=edit.index, **{field: model}, edited_sha256=hashes[edit.index])
            if found is not None:
                out[edit.index].update({k: found[k] for k in names if k in found})
            else:
                todo.append(edit)
        try:
            if not todo:
                return
            score_chunk = scores(model)
            with _progress(len(todo), field.split("_")[0].upper(), self.progress) as bar:
                for first in range(0, len(todo), 16):
                    chunk = todo[first : first + 16]
                    for edit, values in zip(chunk, score_chunk(chunk)):
                        out[edit.index].update(values)
                        record = {"index": edit.index, "id": edit.id, field: model}
                        store.append({**record, "edited_sha256": hashes[edit.index], **values})
                    bar.update(len(chunk))
        finally:
            store.close()

    def _clip_scores(self, clip_model: str):
        """CLIP-T of each edit against its instruction, and CLIP-I against its target (with references)."""
        scorer = reference_metrics.ClipScorer(clip_model)

        def score(chunk: list[BenchmarkEdit]) -> list[dict]:
            edited = [_open_rgb(self.image_path(e)) for e in chunk]
            targets = [self.bench.target(e) for e in chunk] if self.bench.has_references else None
            return evaluators.clip_metrics(scorer, edited, [e.instruction for e in chunk], targets)

        return score

    def _dino_scores(self, dino_model: str):
        """DINO: cosine similarity of the DINO embeddings of each edit and its target."""
        scorer = reference_metrics.DinoScorer(dino_model)

        def score(chunk: list[BenchmarkEdit]) -> list[dict]:
            edited = [_open_rgb(self.image_path(e)) for e in chunk]
            return evaluators.dino_metrics(scorer, edited, [self.bench.target(e) for e in chunk])

        return score


def _open_rgb(path: str | os.PathLike):
    from PIL import Image

    with to_path(path).open("rb") as f, Image.open(f) as opened:
        return opened.convert("RGB")


# ----------------------------------------------------------------------------------------------------
# Aggregation.


def _type_order(edit_type: str) -> tuple:
    known = EDIT_TYPE_ORDER.index(edit_type) if edit_type in EDIT_TYPE_ORDER else len(EDIT_TYPE_ORDER)
    return known, edit_type


def _versions_info() -> dict:
    import importlib.metadata

    import rewardedit_jax

    out = {"python": platform.python_version(), "rewardedit_jax": rewardedit_jax.__version__}
    for dist in ("numpy", "jax", "jaxlib", "flax", "pillow", "tensorflow-datasets", "openai", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------------------------------
# The API.


def evaluate(
    model: str | os.PathLike,
    benchmark: str,
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    judge: str | None = None,
    reward: str | Sequence[float] | None = None,
    feedback: str | None = None,
    steps: int = 30,
    text_guidance: float = 7.5,
    image_guidance: float = 1.5,
    seed: int = 42,
    seed_per_edit: bool | None = None,
    shared_noise: bool = False,
    resolution: int | None = None,
    scheduler: str = "euler_ancestral",
    dtype: str = "auto",
    reward_guidance: float | None = None,
    low_reward: str | Sequence[float] = "0,0,0",
    low_feedback: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    clip_model: str | os.PathLike | None = None,
    dino_model: str | os.PathLike | None = None,
    judge_config=None,
    compiler_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = _log,
) -> dict | None:
    """Generate, judge and summarize the edits of ``benchmark``; returns the ``results.json`` dict.

    ``model``: a diffusers pipeline folder, Flax model directory or training workdir
    (:func:`rewardedit_jax.convert.load_pipeline`). ``benchmark``: ``real_edit`` or
    ``synthetic_edit[/CONFIG]``, built in ``data_dir``. ``judge``: ``gpt``, ``oracle`` or ``none``
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
    judges and writes the results (other processes return None). ``limit``:
    only the first N edits of the split. ``clip_model`` / ``dino_model``: local transformers folders for the
    reference metrics (:mod:`rewardedit_jax.reference_metrics`; DINO needs references).
    ``compiler_options`` go to XLA (the tests use fast compilation). Errors a user can fix raise
    :class:`EvaluationError` (one line).
    """
    log = log or (lambda message: None)
    start = time.perf_counter()
    name = benchmark.partition("/")[0]
    judge = judge or DEFAULT_JUDGE.get(name, "none")
    if judge not in JUDGES:
        raise EvaluationError(f"--judge must be one of {', '.join(JUDGES)}; got {judge!r}")
    if judge == "oracle" and name != "synthetic_edit":
        raise EvaluationError(
            "--judge oracle needs the ground truth of synthetic_edit; use --judge gpt or none"
        )
    for flag, value, low in (("--steps", steps, 1), ("--batch-size", batch_size, 1), ("--limit", limit, 1)):
        if value is not None and value < low:
            raise EvaluationError(f"{flag} must be at least {low}; got {value}")
    if resolution is not None and resolution < 8:
        raise EvaluationError(f"--resolution must be at least 8; got {resolution}")
    if shared_noise and seed_per_edit:
        raise EvaluationError("--shared-noise and --seed-per-edit contradict each other; give one")
    if not 0 <= seed < 2**32:
        raise EvaluationError(f"--seed must be in 0..{2**32 - 1}; got {seed}")
    if scheduler not in SCHEDULER_CHOICES:
        raise EvaluationError(f"--scheduler must be one of {', '.join(SCHEDULER_CHOICES)}")
    if dtype not in DTYPE_CHOICES:
        raise EvaluationError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}")
    reward_scores = _parse_reward(reward)
    if reward_guidance is not None and not math.isfinite(reward_guidance):
        raise EvaluationError(f"--reward-guidance must be a finite number; got {reward_guidance}")
    low_scores = _parse_reward(low_reward, "--low-reward") if reward_guidance is not None else None
    try:
        model_path = to_path(model, expanduser=True)
        out = to_path(out, expanduser=True)
        check_bucket(out)
    except PathError as e:
        raise EvaluationError(str(e)) from None
    if not model_path.exists():
        raise EvaluationError(f"{model_path}: no such model folder")
    if not model_path.is_dir():
        raise EvaluationError(f"{model_path}: not a model folder")
    if clip_model is not None:
        if is_remote(clip_model):
            raise EvaluationError(f"{clip_model}: --clip-model must be a local folder")
        clip_model = str(Path(clip_model).expanduser().resolve())
        if not Path(clip_model).is_dir():
            raise EvaluationError(f"{clip_model}: no such CLIP model folder")
    if dino_model is not None:
        if is_remote(dino_model):
            raise EvaluationError(f"{dino_model}: --dino-model must be a local folder")
        try:
            dino_model = reference_metrics.check_dino_model(dino_model)
        except reference_metrics.MetricModelError as e:
            raise EvaluationError(str(e)) from None
    model_step = _workdir_step(model_path)
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"{out}: not a folder")
    if judge == "gpt" and is_remote(out):
        raise EvaluationError(
            f"{out}: --judge gpt needs a local --out (its cache is sqlite and the judge reads the images "
            "from disk); use a local folder or --judge none"
        )
    if judge == "gpt":
        judge_config = _gpt_config(judge_config, out)
    dataset_dir = resolve_benchmark(benchmark, data_dir)
    bench = Benchmark(name, dataset_dir, limit)
    if not bench.edits:
        raise EvaluationError(f"{bench.full_name}: the {SPLIT} split is empty")
    if dino_model is not None and not bench.has_references:
        raise EvaluationError(
            f"--dino-model compares edits with reference edits, which {bench.full_name} has not; "
            "use it with synthetic_edit"
        )
    if name == "real_edit" and resolution is None:
        from rewardedit_jax.sampling.sampler import DEFAULT_RESOLUTION

        resolution = DEFAULT_RESOLUTION
    if name == "real_edit" and resolution < 64:
        raise EvaluationError(f"--resolution must be at least 64 for real_edit; got {resolution}")
    if dtype == "auto":
        import jax

        dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    settings = GenerationSettings(
        model=str(resolve(model_path)),
        benchmark=bench.full_name,
        steps=int(steps),
        text_guidance=float(text_guidance),
        image_guidance=float(image_guidance),
        seed=int(seed),
        resolution=resolution,
        scheduler=scheduler,
        dtype=dtype,
        reward=reward_scores,
        feedback=feedback,
        seed_per_edit=not shared_noise and seed_per_edit is not False,
        reward_guidance=None if reward_guidance is None else float(reward_guidance),
        low_reward=low_scores,
        low_feedback=None if reward_guidance is None else str(low_feedback),
        model_step=model_step,
    )
    _check_generation_settings(out, settings)
    makedirs(out)
    log(f"{bench.full_name}: {len(bench.edits)} edits -> {out}")

    run = _Run(out, bench, settings, log, progress)
    run.generate(
        reward_requested=reward is not None or feedback is not None or reward_guidance is not None,
        batch_size=batch_size,
        compiler_options=dict(compiler_options) if compiler_options else None,
    )
    import jax

    if jax.process_index() != 0:  # a multi-host job: process 0 judges and writes the results
        log(f"process {jax.process_index()}: generated its share; process 0 judges and writes the results")
        return None
    run.ensure_side_files()
    hashes = {e.index: _sha256(run.image_path(e)) for e in bench.edits}
    judgments = run.judge(judge, judge_config, hashes)
    metrics = run.metrics(clip_model, hashes, dino_model=dino_model)

    judged = judge != "none"
    by_type: dict[str, list[BenchmarkEdit]] = {}
    for edit in bench.edits:
        by_type.setdefault(edit.edit_type, []).append(edit)
    by_type = dict(sorted(by_type.items(), key=lambda kv: _type_order(kv[0])))
    generation = (
        json.loads((out / "generation.json").read_text()) if (out / "generation.json").is_file() else {}
    )
    results = {
        "overall": aggregate(bench.edits, judgments, metrics, judged),
        "by_edit_type": {t: aggregate(edits, judgments, metrics, judged) for t, edits in by_type.items()},
        "config": {
            "model": settings.model,
            "benchmark": bench.full_name,
            "dataset_dir": str(dataset_dir),
            "split": SPLIT,
            "judge": judge,
            **_judge_metadata(judge, judge_config),
            "yes_threshold": _oracle_threshold() if judge == "oracle" else None,
            "generation": {k: v for k, v in settings.as_dict().items() if k not in ("model", "benchmark")},
            "reward_condition": generation.get("reward_condition"),
            "batch_size": batch_size,
            "devices": jax.device_count(),  # the devices (of every host) that generated the edits
            "hosts": jax.process_count(),
            "limit": limit,
            "clip_model": clip_model,
            "dino_model": dino_model,
            "versions": _versions_info(),
        },
        "run": run.stats,
    }
    grids = _write_grids(run, by_type)
    rows = [_report_row(run, e, judgments.get(e.index), metrics[e.index]) for e in bench.edits]
    tiny = max(_open_rgb(run.image_path(bench.edits[0])).size) < 128
    report.write_report(
        out / "report.html",
        results,
        rows,
        title=f"{to_path(settings.model).name} on {bench.full_name}",
        grids=grids,
        tiny_images=tiny,
    )
    run.stats["seconds"] = round(time.perf_counter() - start, 2)
    report.atomic_write_json(out / "results.json", results)
    overall = results["overall"]
    summary = ", ".join(
        f"{p} {100 * overall[f'{p}_yes']:.1f}% / {overall[f'{p}_score']:.2f}"
        for p in PERSPECTIVES
        if overall[f"{p}_yes"] is not None
    )
    log(f"wrote {out / 'results.json'} and {out / 'report.html'}" + (f": {summary}" if summary else ""))
    return results


def _oracle_threshold() -> float:
    from rewardedit_jax.oracle import YES_THRESHOLD

    return YES_THRESHOLD


def _gpt_config(judge_config, out: epath.Path):
    from rewardedit_jax.judge import JudgeConfig, api_key_from_env

    judge_config = judge_config or JudgeConfig()
    if judge_config.cache_path is None:
        judge_config = dataclasses.replace(judge_config, cache_path=str(out / "judge-cache.sqlite"))
    if not api_key_from_env(judge_config.azure):
        names = "AZURE_OPENAI_API_KEY or OPENAI_API_KEY" if judge_config.azure else "OPENAI_API_KEY"
        raise EvaluationError(f"--judge gpt needs an API key: set {names} (or use --judge none)")
    _judge_metadata("gpt", judge_config)  # a missing or changed official file: a one-line error, now
    return judge_config


def _gpt_judge_name(judge_config) -> str:
    """The judge's name in judgments.jsonl; judgments are reused only under the same name."""
    if judge_config.protocol == "official":
        return f"gpt:{judge_config.model}:{_judge_metadata('gpt', judge_config)['judge_details']['version']}"
    return f"gpt:{judge_config.model}"


def _judge_metadata(judge: str, judge_config) -> dict:
    """results.json's judge_model, judge_protocol and judge_details (prompt hashes, never prompt text)."""
    if judge != "gpt":
        return {"judge_model": None, "judge_protocol": None, "judge_details": None}
    from rewardedit_jax.judge import protocol_metadata
    from rewardedit_jax.judge.official import OfficialRepoError

    try:
        details = protocol_metadata(judge_config)
    except (OfficialRepoError, ValueError, RuntimeError) as e:
        raise EvaluationError(str(e)) from None
    return {
        "judge_model": judge_config.model,
        "judge_protocol": judge_config.protocol,
        "judge_details": details,
    }


def _write_grids(run: _Run, by_type: Mapping[str, list[BenchmarkEdit]]) -> dict[str, str]:
    from rewardedit_jax.edit import write_png_atomically

    grids = {}
    for edit_type, edits in by_type.items():
        strips = []
        for edit in edits[:MAX_GRID_EDITS]:
            paths = [run.input_path(edit), run.image_path(edit)]
            if run.bench.has_references:
                paths.append(run.target_path(edit))
            strips.append([np.asarray(_open_rgb(p)) for p in paths])
        relative = f"grids/{_safe(edit_type)}.png"
        write_png_atomically(report.make_grid(strips, cell=GRID_CELL), run.out / relative)
        grids[edit_type] = relative
    return grids


def _report_row(run: _Run, edit: BenchmarkEdit, judgment, metrics: Mapping) -> dict:
    row = {
        "name": edit.name,
        "edit_type": edit.edit_type,
        "instruction": edit.instruction,
        "source": run.input_path(edit).relative_to(run.out).as_posix(),
        "edited": run.image_path(edit).relative_to(run.out).as_posix(),
        "judgment": judgment,
        "metrics": dict(metrics),
    }
    if run.bench.has_references:
        row["target"] = run.target_path(edit).relative_to(run.out).as_posix()
    return row


# ----------------------------------------------------------------------------------------------------
# The CLI.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.evaluate",
        description="Generate, judge and summarize a benchmark's edits (Real-Edit protocol).",
    )
    p.add_argument(
        "--model", required=True, help="diffusers pipeline folder, Flax model directory or workdir"
    )
    p.add_argument("--benchmark", required=True, help="real_edit or synthetic_edit[/CONFIG]")
    p.add_argument("--data-dir", required=True, help="TFDS data_dir the benchmark is built in")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    p.add_argument("--judge", choices=JUDGES, help="default: gpt for real_edit, oracle for synthetic_edit")
    add_sampling_arguments(p, seed_help="edit i is seeded with seed + i, its index in the split (default 42)")
    p.add_argument(
        "--shared-noise",
        action="store_true",
        help="seed every edit with --seed (one noise draw shared by all edits) instead of seed + i",
    )
    p.add_argument(
        "--seed-per-edit",
        action="store_const",
        const=True,
        help="seed edit i with seed + i: independent noise per edit (the default; kept for old commands)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        help="long side of the fitted input (default: 512 real_edit, native synthetic)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="edits per device per sampler call (default 8)",
    )
    p.add_argument("--limit", type=int, help="only the first N edits (quick looks)")
    p.add_argument("--clip-model", help="local transformers CLIPModel folder for CLIP-I / CLIP-T")
    p.add_argument(
        "--dino-model",
        help="local transformers ViTModel/Dinov2Model folder (e.g. facebook/dino-vits16) for the DINO "
        "similarity to the references (synthetic_edit)",
    )
    p.add_argument(
        "--judge-protocol",
        choices=("project", "official"),
        default="project",
        help="--judge gpt: the project's own prompts (default), or the official repository's judge requests "
        "read from --official-repo (docs/judge.md)",
    )
    p.add_argument(
        "--official-repo",
        help="--judge-protocol official: your clone of bytedance/Multi-Reward-Editing (its gpt_eval/*.py)",
    )
    p.add_argument(
        "--judge-model",
        help="--judge gpt: model (default: gpt-4o; with --judge-protocol official gpt-4o-2024-05-13)",
    )
    p.add_argument("--judge-base-url", help="--judge gpt: an OpenAI-compatible endpoint")
    p.add_argument("--judge-concurrency", type=int, default=8, help="--judge gpt: requests in flight")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_distributed_arguments(p)
    return p


def run_cli(args) -> dict | None:
    judge_config = None
    gpt = args.judge == "gpt" or (args.judge is None and args.benchmark.startswith("real_edit"))
    if args.judge_protocol == "official" and not gpt:
        raise EvaluationError("--judge-protocol official applies to --judge gpt only")
    if args.judge_protocol == "official" and not args.official_repo:
        raise EvaluationError(
            "--judge-protocol official needs --official-repo PATH, a clone of bytedance/Multi-Reward-Editing"
        )
    if args.official_repo and args.judge_protocol != "official":
        raise EvaluationError("--official-repo applies to --judge-protocol official only")
    if gpt:
        from rewardedit_jax.judge import JudgeConfig

        try:
            judge_config = JudgeConfig(
                model=args.judge_model,
                base_url=args.judge_base_url,
                concurrency=args.judge_concurrency,
                protocol=args.judge_protocol,
                official_repo=args.official_repo,
            )
        except ValueError as e:
            raise EvaluationError(str(e)) from None
    return evaluate(
        args.model,
        args.benchmark,
        args.data_dir,
        args.out,
        judge=args.judge,
        reward=args.reward,
        feedback=args.feedback,
        steps=args.steps,
        text_guidance=args.text_guidance,
        image_guidance=args.image_guidance,
        seed=args.seed,
        seed_per_edit=args.seed_per_edit,
        shared_noise=args.shared_noise,
        resolution=args.resolution,
        scheduler=args.scheduler,
        dtype=args.dtype,
        reward_guidance=args.reward_guidance,
        low_reward=args.low_reward,
        low_feedback=args.low_feedback,
        batch_size=args.batch_size,
        limit=args.limit,
        clip_model=args.clip_model,
        dino_model=args.dino_model,
        judge_config=judge_config,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        run_cli(args)
    except (EvaluationError, PathError) as e:  # PathError: a remote file that cannot be read or written
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
