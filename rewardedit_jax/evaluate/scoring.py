"""Scoring an evaluation's edits with the evaluators training uses (:mod:`rewardedit_jax.evaluators`).

The judge (``--judge oracle`` or ``gpt``) and the reference metrics are the evaluator objects
:func:`rewardedit_jax.evaluators.make_evaluator` makes for ``config.evals`` too. What is added here is the
output folder's cache: a judgment is kept in ``judgments.jsonl`` and a model's metrics in ``metrics.jsonl``
under the sha256 of the edited image, so a rerun scores only the edits that are new or changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rewardedit_jax import evaluators
from rewardedit_jax.evaluate.outputs import JsonlStore, OutputFolder, progress_bar
from rewardedit_jax.evaluate.settings import EvalSettings
from rewardedit_jax.evaluators import METRIC_GROUPS, BenchmarkEdit, EditRecord, Evaluator

METRIC_CHUNK = 16  # edits a metric model embeds per call


def make_judge(settings: EvalSettings, log: Callable[[str], None] | None = None) -> Evaluator | None:
    """The evaluator of ``--judge`` (None for ``none``)."""
    if settings.judge == "none":
        return None
    return evaluators.make_evaluator(
        settings.judge, judge_config=settings.judge_config, progress=settings.progress, log=log
    )


def make_reference(settings: EvalSettings) -> evaluators.ReferenceEvaluator:
    """The reference metrics: L1 and L2 with references, ``--clip-model``'s and ``--dino-model``'s."""
    return evaluators.make_evaluator(
        "reference", clip_model=settings.clip_model, dino_model=settings.dino_model
    )


class Scoring:
    """The judge and the reference metrics of one evaluation, on the edits of its output folder."""

    def __init__(self, folder: OutputFolder, settings: EvalSettings, log: Callable[[str], None]):
        self.folder, self.settings, self.log = folder, settings, log
        self.judge = make_judge(settings, log)
        self.reference = make_reference(settings)
        self.judge_name = None if self.judge is None else self.judge.name
        self._photo_sizes: dict[str, tuple[int, int]] = {}

    # --- the judge --------------------------------------------------------------------------------------

    def judgments(self, hashes: Mapping[int, str], stats: dict) -> dict[int, dict]:
        """Per edit (by index): perspective -> {"answer", "score"}, and ``failed``: perspective -> reason."""
        if self.judge is None:
            return {}
        edits, name = self.folder.bench.edits, self.judge_name
        store = JsonlStore(self.folder.out / "judgments.jsonl")
        judgments: dict[int, dict] = {}
        todo = []
        for edit in edits:
            found = store.find(index=edit.index, id=edit.id, judge=name, edited_sha256=hashes[edit.index])
            if found is not None:
                judgments[edit.index] = found
            else:
                todo.append(edit)
        stats.update(judge=name, reused_judgments=len(judgments), judged=len(todo))
        if judgments:
            self.log(f"reusing {len(judgments)} judgments ({name}) from {store.path}")
        try:
            if todo:
                self._judge(todo, hashes, store, judgments)
        finally:
            store.close()
        return judgments

    def _judge(self, todo: list[BenchmarkEdit], hashes, store: JsonlStore, judgments: dict) -> None:
        # A judge of files takes every edit at once (it keeps requests in flight); one of images goes edit by
        # edit, so that few images are held and each judgment is kept as soon as it is made.
        judge = self.judge
        chunk = len(todo) if judge.reads_files else 1
        shown = self.settings.progress and not judge.reads_files  # the LVLM judge shows its own progress
        with progress_bar(len(todo), f"judging ({self.judge_name})", shown) as bar:
            for first in range(0, len(todo), chunk):
                part = todo[first : first + chunk]
                found, _ = judge.score([self._judge_record(edit) for edit in part])
                for edit in part:
                    record = {
                        "index": edit.index,
                        "id": edit.id,
                        "judge": self.judge_name,
                        "edited_sha256": hashes[edit.index],
                        **found[edit.index],
                    }
                    if "failed" not in record:
                        store.append(record)  # failed edits are not stored: the next run asks again
                    judgments[edit.index] = record
                bar.update(len(part))

    def _judge_record(self, edit: BenchmarkEdit) -> EditRecord:
        if self.judge.reads_files:
            return self.folder.record(edit, images=False, sent_size=self._sent_size(edit))
        return self.folder.record(edit, images=True, source=self.judge.needs_source)

    def _sent_size(self, edit: BenchmarkEdit) -> tuple[int, int] | None:
        """The official eval.py's judge size: height = the resolution (512), the original photo's aspect."""
        config = self.settings.judge_config
        if config is None or config.protocol != "official":
            return None
        from rewardedit_jax.judge.official import OFFICIAL_HEIGHT, official_size

        name = self.folder.bench.input_name(edit)
        if name not in self._photo_sizes:  # Real-Edit: 7 edits per photo
            self._photo_sizes[name] = self.folder.bench.source(edit).size
        return official_size(*self._photo_sizes[name], self.settings.resolution or OFFICIAL_HEIGHT)

    # --- reference metrics (definitions: rewardedit_jax.reference_metrics) -------------------------------

    def metrics(self, hashes: Mapping[int, str]) -> dict[int, dict]:
        """Per edit: L1, L2 (and DINO, with ``--dino-model``) against the target when the benchmark has
        references; CLIP-T (and CLIP-I with references) with ``--clip-model``. Model scores are cached in
        ``metrics.jsonl`` by (edit, model folder, sha256 of the edited image)."""
        bench = self.folder.bench
        out: dict[int, dict] = {e.index: {} for e in bench.edits}
        if bench.has_references:
            for edit in bench.edits:
                _, found = self.reference.score([self.folder.record(edit, images=True)], groups=("pixel",))
                out[edit.index].update(found[edit.index])
        for group, model in self.reference.models.items():
            self._model_metrics(group, model, hashes, out)
        return out

    def _model_metrics(self, group: str, model: str, hashes, out: dict[int, dict]) -> None:
        """Fill ``out`` with one model's metrics: the cached ones, then the reference evaluator's."""
        field, names = f"{group}_model", METRIC_GROUPS[group]
        store = JsonlStore(self.folder.out / "metrics.jsonl")
        todo = []
        for edit in self.folder.bench.edits:
            found = store.find(index=edit.index, **{field: model}, edited_sha256=hashes[edit.index])
            if found is not None:
                out[edit.index].update({k: found[k] for k in names if k in found})
            else:
                todo.append(edit)
        try:
            if not todo:
                return
            with progress_bar(len(todo), group.upper(), self.settings.progress) as bar:
                for first in range(0, len(todo), METRIC_CHUNK):
                    part = todo[first : first + METRIC_CHUNK]
                    records = [self.folder.record(edit, images=True) for edit in part]
                    _, found = self.reference.score(records, groups=(group,))
                    for edit in part:
                        values = found[edit.index]
                        out[edit.index].update(values)
                        record = {"index": edit.index, "id": edit.id, field: model}
                        store.append({**record, "edited_sha256": hashes[edit.index], **values})
                    bar.update(len(part))
        finally:
            store.close()
