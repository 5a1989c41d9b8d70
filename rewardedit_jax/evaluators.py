"""Benchmarks and evaluators shared by ``python -m rewardedit_jax.evaluate`` and evaluation during training.

- :class:`Benchmark` (the ``test`` split of a built ``real_edit`` or ``synthetic_edit``, its first N edits),
  :func:`resolve_benchmark`, :func:`benchmark_resolution` and :func:`edit_jobs`: which edits are evaluated
  and how their sources are fitted and seeded for the sampler.
- The per-edit scores, defined once: :func:`oracle_verdicts` (the synthetic_edit ground-truth oracle,
  :mod:`rewardedit_jax.oracle`), :func:`pixel_metrics` (L1, L2), :func:`clip_metrics` (CLIP-I, CLIP-T) and
  :func:`dino_metrics` (:mod:`rewardedit_jax.reference_metrics`), :func:`gpt_verdicts` (the LVLM judge's
  answer for one edit), and :func:`aggregate` (yes-ratio and mean score per perspective, metric means).
- Evaluators, small classes constructed with their settings by :func:`make_evaluator`, with one interface
  (``score(records) -> (judgments, metrics)`` per edit index, ``summarize(records)`` -> the aggregate):
  :class:`OracleEvaluator`, :class:`ReferenceEvaluator` and :class:`GptEvaluator`. The trainer's
  ``config.evals`` (:mod:`rewardedit_jax.training.evals`) scores freshly sampled edits with them; the
  ``evaluate`` CLI scores the edits of its output folder with the same objects, caching each edit's
  judgment and model metrics in the folder.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from rewardedit_jax import reference_metrics
from rewardedit_jax.io import to_path
from rewardedit_jax.parallel import EditJob

BENCHMARKS = ("real_edit", "synthetic_edit")
DEFAULT_SYNTHETIC_CONFIG = "32px"  # the synthetic_edit builder's default config
SPLIT = "test"
PERSPECTIVES = ("following", "preserving", "quality")
EVALUATOR_TYPES = ("oracle", "reference", "gpt")
METRIC_NAMES = ("l1", "l2", "clip_i", "clip_t", "dino")


class EvaluationError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _safe(text: str, limit: int = 80) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:limit] or "edit"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def resolve_benchmark(benchmark: str, data_dir: str | os.PathLike) -> epath.Path:
    """The prepared dataset folder (``D/<name>[/<config>]/<version>``) of ``real_edit`` or ``synthetic_edit``.

    ``synthetic_edit`` without a config takes the only one built, or the default (32px) among several.
    """
    name, _, config = benchmark.partition("/")
    if name not in BENCHMARKS:
        raise EvaluationError(f"--benchmark must be one of {', '.join(BENCHMARKS)} (optionally /CONFIG)")
    data_dir = to_path(data_dir, expanduser=True)
    if not data_dir.is_dir():
        raise EvaluationError(f"{data_dir}: no such data folder")
    root = data_dir / name
    how = f"build it with: tfds build tfds_builders/{name} --data_dir {data_dir} --file_format array_record"
    if name == "real_edit":
        if config:
            raise EvaluationError("real_edit has no configs")
        parent = root
    else:
        built = sorted(p.name for p in root.iterdir() if _versions(p)) if root.is_dir() else []
        if not config:
            if not built:
                raise EvaluationError(f"synthetic_edit is not built in {data_dir}; {how} --config tiny")
            if len(built) > 1 and DEFAULT_SYNTHETIC_CONFIG not in built:
                raise EvaluationError(
                    f"several synthetic_edit configs are built in {data_dir} ({', '.join(built)}); "
                    "choose one with --benchmark synthetic_edit/CONFIG"
                )
            config = built[0] if len(built) == 1 else DEFAULT_SYNTHETIC_CONFIG
        parent = root / config
    versions = _versions(parent)
    if not versions:
        what = name if not config else f"{name}/{config}"
        raise EvaluationError(f"{what} is not built in {data_dir}; {how}")
    return versions[-1]


def _versions(folder: epath.Path) -> list[epath.Path]:
    """Prepared version folders (with ``dataset_info.json``) of a dataset (config) folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").is_file()
    ]
    return sorted(found, key=lambda p: tuple(int(x) for x in p.name.split(".")))


@dataclasses.dataclass(frozen=True)
class BenchmarkEdit:
    """One edit of the benchmark: its position in the split, identity, instruction and edit type."""

    index: int
    id: str
    instruction: str
    edit_type: str
    source_key: str  # the source image's identity (several Real-Edit edits share one photo)

    @property
    def name(self) -> str:
        return f"{self.index:04d}_{_safe(self.id)}"


class Benchmark:
    """The ``test`` split of a built benchmark: its edits (the first ``limit``) and their images."""

    def __init__(self, kind: str, dataset_dir: epath.Path, limit: int | None = None):
        from rewardedit_jax.data import load_data_source

        try:
            self._records, info = load_data_source(dataset_dir, SPLIT)
        except Exception as e:  # a damaged or foreign folder
            raise EvaluationError(f"{dataset_dir}: cannot read the {SPLIT} split ({_one_line(e)})") from None
        self.kind = kind
        self.full_name = info.full_name
        self.dataset_dir = dataset_dir
        self.has_references = "target_image" in info.features
        count = len(self._records) if limit is None else min(limit, len(self._records))
        self.edits = [self._edit(i, self._records[i]) for i in range(count)]

    def _edit(self, index: int, record: Mapping[str, Any]) -> BenchmarkEdit:
        instruction, edit_type = _text(record["instruction"]), _text(record["edit_type"])
        if self.kind == "real_edit":
            image_id = _text(record["image_id"])
            return BenchmarkEdit(
                index, f"{Path(image_id).stem}_{edit_type}", instruction, edit_type, image_id
            )
        key = _text(record["key"]) if "key" in record else str(index)
        return BenchmarkEdit(index, key, instruction, edit_type, key)

    def _image(self, edit: BenchmarkEdit, feature: str):
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(self._records[edit.index][feature])) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")

    def source(self, edit: BenchmarkEdit):
        """The source image as stored (PIL RGB, EXIF orientation applied)."""
        return self._image(edit, "image" if self.kind == "real_edit" else "source_image")

    def target(self, edit: BenchmarkEdit):
        return self._image(edit, "target_image")

    def input_name(self, edit: BenchmarkEdit) -> str:
        """The fitted source's file name under ``inputs/`` (one per photo for Real-Edit)."""
        return (
            f"{_safe(edit.source_key.replace('.', '_'))}.png"
            if self.kind == "real_edit"
            else f"{edit.name}.png"
        )

    def fitted_size(self, width: int, height: int, resolution: int | None, multiple: int) -> tuple[int, int]:
        """The (width, height) a source of this size is fitted to for editing."""
        from rewardedit_jax.sampling import edit_size

        if self.kind == "real_edit":  # the official protocol, as `python -m rewardedit_jax.edit`
            return edit_size(width, height, resolution)
        scale = 1.0 if resolution is None else resolution / max(width, height)
        return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))


def edit_seed(seed: int, edit: BenchmarkEdit) -> int:
    """Edit i's seed: ``seed + i`` (independent noise per edit, as the official eval.py draws it)."""
    return (seed + edit.index) % 2**32


def benchmark_resolution(kind: str, resolution: int | None) -> int | None:
    """The long side sources are fitted to: the given one, else the official protocol's 512 for real_edit
    and None (the native size) for synthetic_edit."""
    if resolution is None and kind == "real_edit":
        from rewardedit_jax.sampling.sampler import DEFAULT_RESOLUTION

        return DEFAULT_RESOLUTION
    return resolution


def edit_jobs(
    bench: Benchmark,
    edits: Sequence[BenchmarkEdit],
    *,
    resolution: int | None,
    multiple: int,
    seed_of: Callable[[BenchmarkEdit], int],
) -> list[EditJob]:
    """One :class:`~rewardedit_jax.parallel.EditJob` per edit, keyed by the edit: its source fitted for
    editing (sides multiples of ``multiple``, the VAE factor), its instruction and ``seed_of(edit)``. A
    photo several edits share (Real-Edit) is decoded and fitted once."""
    fitted: dict[str, np.ndarray] = {}
    for edit in edits:
        if edit.source_key not in fitted:
            image = bench.source(edit)
            size = bench.fitted_size(image.width, image.height, resolution, multiple)
            fitted[edit.source_key] = fit_image(image, size)
    return [EditJob(fitted[e.source_key], e.instruction, seed_of(e), e) for e in edits]


def fit_image(image, size: tuple[int, int]) -> np.ndarray:
    """``image`` (PIL) fitted to ``size`` (width, height): centre crop + LANCZOS, as ``load_edit_image``."""
    from PIL import Image, ImageOps

    if image.size != tuple(size):
        image = ImageOps.fit(image, tuple(size), method=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def aggregate(
    edits: Sequence[BenchmarkEdit], judgments: Mapping[int, dict], metrics: Mapping[int, dict], judged: bool
) -> dict:
    """One results block: n, failed, <perspective>_yes / _score, and the mean of each per-edit metric."""
    block: dict[str, Any] = {"n": len(edits), "failed": 0}
    for p in PERSPECTIVES:
        block[f"{p}_yes"] = block[f"{p}_score"] = None
    if judged:
        block["failed"] = sum(
            1 for e in edits if e.index not in judgments or judgments[e.index].get("failed")
        )
        for p in PERSPECTIVES:
            verdicts = [judgments[e.index][p] for e in edits if p in judgments.get(e.index, {})]
            if verdicts:
                block[f"{p}_yes"] = sum(v["answer"] == "yes" for v in verdicts) / len(verdicts)
                block[f"{p}_score"] = sum(float(v["score"]) for v in verdicts) / len(verdicts)
    for name in METRIC_NAMES:
        values = [metrics[e.index][name] for e in edits if metrics.get(e.index, {}).get(name) is not None]
        if values:
            block[name] = float(np.mean(values))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in block.items()}


# ----------------------------------------------------------------------------------------------------
# Per-edit scores (the CLI and the trainer both call these).


def _pil(image):
    from PIL import Image

    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))


def edited_at(edited, size: tuple[int, int]) -> np.ndarray:
    """The edited image (PIL or (H, W, 3) uint8) at ``size`` (width, height), LANCZOS-resized when needed."""
    from PIL import Image

    edited = _pil(edited).convert("RGB")
    if edited.size != tuple(size):
        edited = edited.resize(tuple(size), Image.Resampling.LANCZOS)
    return np.asarray(edited, dtype=np.uint8)


def oracle_verdicts(source, edited, target, instruction: str = "") -> dict[str, dict]:
    """The oracle's judgment of one synthetic_edit edit: perspective -> {"answer", "score"}.

    ``source`` and ``target`` as stored (PIL or arrays), ``edited`` at any size (judged at the target's).
    """
    from rewardedit_jax import oracle

    source, target = np.asarray(_pil(source).convert("RGB")), np.asarray(_pil(target).convert("RGB"))
    edited = edited_at(edited, (target.shape[1], target.shape[0]))
    return oracle.judge_edit(source, edited, target, {"instruction": instruction})


def pixel_metrics(edited, target) -> dict[str, float]:
    """``{"l1", "l2"}`` of one edit against its reference (the edit bicubic-resized to its size)."""
    target = _pil(target).convert("RGB")
    edited = reference_metrics.resize_to(_pil(edited).convert("RGB"), target.size)
    l1, l2 = reference_metrics.pixel_distances(edited, target)
    return {"l1": l1, "l2": l2}


def clip_metrics(
    scorer, edited: Sequence, instructions: Sequence[str], targets: Sequence | None
) -> list[dict]:
    """CLIP-T of each edit against its instruction, and CLIP-I against its target (when ``targets``)."""
    embeds = scorer.image_embeds([_pil(e) for e in edited])
    clip_t = (embeds * scorer.text_embeds(list(instructions))).sum(-1).tolist()
    if targets is None:
        return [{"clip_t": t} for t in clip_t]
    clip_i = (embeds * scorer.image_embeds([_pil(t) for t in targets])).sum(-1).tolist()
    return [{"clip_i": i, "clip_t": t} for i, t in zip(clip_i, clip_t)]


def dino_metrics(scorer, edited: Sequence, targets: Sequence) -> list[dict]:
    """DINO: cosine similarity of the DINO embeddings of each edit and its target."""
    embeds = scorer.image_embeds([_pil(e) for e in edited])
    refs = scorer.image_embeds([_pil(t) for t in targets])
    return [{"dino": v} for v in (embeds * refs).sum(-1).tolist()]


def gpt_verdicts(item) -> tuple[dict[str, dict], dict[str, str] | None]:
    """One edit judged by :func:`rewardedit_jax.judge.evaluate_edits`: (perspective -> {"answer", "score"} for
    the perspectives answered, perspective -> reason for the failed ones, or None)."""
    verdicts = {p: {"answer": j.answer, "score": j.score} for p, j in item.judgments.items() if j.ok}
    return verdicts, (None if item.ok else dict(item.failures))


def gpt_metadata(judge_config) -> dict:
    """What results record about the LVLM judge: ``judge_model``, ``judge_protocol`` and ``judge_details``
    (prompt hashes, never prompt text). A missing or changed official file is a one-line EvaluationError."""
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


# ----------------------------------------------------------------------------------------------------
# Evaluators.


@dataclasses.dataclass
class EditRecord:
    """One generated edit to score: the benchmark edit, its stored source and reference (PIL or arrays;
    target None without references), the edited image, where the fitted source and the edit were written
    (the GPT judge reads files), and the size the judge is sent both images at (None: as written; the
    official protocol's size otherwise). An evaluator reads only what it needs: a caller that holds many
    edits may leave the images it does not read None (see :attr:`Evaluator.reads_files` and
    :attr:`Evaluator.needs_source`)."""

    edit: BenchmarkEdit
    source: Any
    edited: Any
    target: Any = None
    source_path: str | None = None
    edited_path: str | None = None
    sent_size: tuple[int, int] | None = None


class Evaluator:
    """Scores generated edits. ``score(records)`` -> (judgments, metrics), each a dict by edit index;
    ``summarize(records)`` -> the :func:`aggregate` block without its ``None`` entries."""

    kind = ""
    judged = False  # whether it answers the three perspectives
    reads_files = False  # scores the written files (the records' paths), not the images they hold
    needs_source = False  # compares the edit with its unedited source

    @property
    def name(self) -> str:
        """What made a judgment: cached judgments are reused under the same name only."""
        return self.kind

    def score(self, records: Sequence[EditRecord]) -> tuple[dict[int, dict], dict[int, dict]]:
        raise NotImplementedError

    def summary(
        self, records: Sequence[EditRecord], judgments: Mapping[int, dict], metrics: Mapping[int, dict]
    ) -> dict[str, Any]:
        """The :func:`aggregate` block of scored ``records``, without its ``None`` entries."""
        block = aggregate([r.edit for r in records], judgments, metrics, self.judged)
        return {k: v for k, v in block.items() if v is not None}

    def summarize(self, records: Sequence[EditRecord]) -> dict[str, Any]:
        return self.summary(records, *self.score(records))


class OracleEvaluator(Evaluator):
    """The synthetic_edit oracle: each perspective's yes-ratio and mean score (``<p>_yes``, ``<p>_score``)."""

    kind = "oracle"
    judged = True
    needs_source = True

    def score(self, records):
        judgments = {}
        for r in records:
            if r.target is None:
                raise EvaluationError(f"the oracle judges edits against references; {r.edit.name} has none")
            judgments[r.edit.index] = oracle_verdicts(r.source, r.edited, r.target, r.edit.instruction)
        return judgments, {}


# The reference metrics in groups: what one model (or none, for the pixel distances) computes.
METRIC_GROUPS = {"pixel": ("l1", "l2"), "clip": ("clip_i", "clip_t"), "dino": ("dino",)}


class ReferenceEvaluator(Evaluator):
    """Reference metrics: L1 and L2 against the target; CLIP-I and CLIP-T with ``clip_model``, DINO with
    ``dino_model`` (local transformers folders; :mod:`rewardedit_jax.reference_metrics`). Each model is
    loaded on first use and kept."""

    kind = "reference"

    def __init__(self, clip_model: str | None = None, dino_model: str | None = None):
        self.clip_model, self.dino_model = clip_model or None, dino_model or None
        self._clip = self._dino = None

    @property
    def models(self) -> dict[str, str]:
        """The model groups of :data:`METRIC_GROUPS` this evaluator computes -> their model folders."""
        found = {"clip": self.clip_model, "dino": self.dino_model}
        return {group: model for group, model in found.items() if model}

    def score(self, records, groups: Sequence[str] = tuple(METRIC_GROUPS)):
        """The metrics of ``groups`` (default all; a model group only with its model) for each record."""
        metrics: dict[int, dict] = {r.edit.index: {} for r in records}
        with_refs = [r for r in records if r.target is not None]
        if "pixel" in groups:
            for r in with_refs:
                metrics[r.edit.index].update(pixel_metrics(r.edited, r.target))
        try:
            if "clip" in groups and self.clip_model and records:
                self._clip = self._clip or reference_metrics.ClipScorer(self.clip_model)
                targets = [r.target for r in records] if len(with_refs) == len(records) else None
                found = clip_metrics(
                    self._clip, [r.edited for r in records], [r.edit.instruction for r in records], targets
                )
                for r, values in zip(records, found):
                    metrics[r.edit.index].update(values)
            if "dino" in groups and self.dino_model and with_refs:
                self._dino = self._dino or reference_metrics.DinoScorer(self.dino_model)
                found = dino_metrics(self._dino, [r.edited for r in with_refs], [r.target for r in with_refs])
                for r, values in zip(with_refs, found):
                    metrics[r.edit.index].update(values)
        except reference_metrics.MetricModelError as e:
            raise EvaluationError(str(e)) from None
        return {}, metrics


class GptEvaluator(Evaluator):
    """The LVLM judge (:mod:`rewardedit_jax.judge`, eval mode) on the edits' files; ``failed`` counts the
    edits it could not judge (their judgment holds ``failed``: perspective -> reason). All records go to
    the judge at once: it keeps ``judge_config.concurrency`` requests in flight and caches every answer."""

    kind = "gpt"
    judged = True
    reads_files = True

    def __init__(self, judge_config, *, progress: bool = False, log: Callable[[str], None] | None = None):
        self.judge_config = judge_config
        self.progress = progress
        self.log = log or (lambda message: None)

    @property
    def name(self) -> str:
        if self.judge_config.protocol == "official":
            return f"gpt:{self.judge_config.model}:{self.metadata()['judge_details']['version']}"
        return f"gpt:{self.judge_config.model}"

    def metadata(self) -> dict:
        return gpt_metadata(self.judge_config)

    def score(self, records):
        from rewardedit_jax.judge import JudgeFatalError, evaluate_edits

        if any(r.source_path is None or r.edited_path is None for r in records):
            raise EvaluationError("the GPT judge reads the edits from files; write them first")
        items = [
            {
                "id": r.edit.name,
                "source": r.source_path,
                "edited": r.edited_path,
                "instruction": r.edit.instruction,
                "sent_size": r.sent_size,
            }
            for r in records
        ]
        config = self.judge_config
        self.log(
            f"judging {len(items)} edits with {config.model}, {config.protocol} protocol "
            f"(cache {config.cache_path})"
        )
        try:
            result = evaluate_edits(items, config, progress=self.progress)
        except JudgeFatalError as e:
            raise EvaluationError(f"judge: {e}") from None
        judgments = {}
        for r, item in zip(records, result.items):
            verdicts, failed = gpt_verdicts(item)
            judgments[r.edit.index] = {**verdicts, **({"failed": failed} if failed else {})}
        failures = sum("failed" in j for j in judgments.values())
        self.log(f"judged {len(items)} edits, {failures} failed, ${result.cost_usd:.4f}")
        return judgments, {}


def make_evaluator(
    kind: str,
    *,
    clip_model: str | None = None,
    dino_model: str | None = None,
    judge_config=None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Evaluator:
    """The evaluator of type ``kind`` (:data:`EVALUATOR_TYPES`) with its settings: the reference models
    (``reference``), the judge's configuration, progress bar and log (``gpt``)."""
    if kind == "oracle":
        return OracleEvaluator()
    if kind == "reference":
        return ReferenceEvaluator(clip_model, dino_model)
    if kind == "gpt":
        if judge_config is None:
            raise EvaluationError("the gpt evaluator needs a judge configuration")
        return GptEvaluator(judge_config, progress=progress, log=log)
    raise EvaluationError(f"unknown evaluator type {kind!r}; one of {', '.join(EVALUATOR_TYPES)}")
