"""The checkpoints of a training workdir (``DIR/checkpoints/<step>/``): the Orbax checkpoint manager the
trainer saves with, and the choice of the checkpoint to resume from or read, skipping damaged ones.

What Orbax 0.12.8 does when a process is killed (SIGKILL, OOM, machine loss) on a local or network file
system: a save writes everything into ``<step>.orbax-checkpoint-tmp/`` (each item first into
``<item>.orbax-checkpoint-tmp/`` inside it, renamed to ``<item>/`` when written), then writes
``commit_success.txt`` and renames the folder to ``<step>/`` in one atomic rename. Only folders named by a
plain step number are listed as checkpoints (on GCS, where Orbax does not rename, only folders holding
``commit_success.txt``), so a kill at any moment of a save, asynchronous or not, leaves a temporary folder
that is never restored. Saving the same step again removes it first, and the manager made here
(``cleanup_tmp_directories``) removes every such leftover when it opens. Checkpoints beyond
``keep_checkpoints`` are deleted only after the new one is finalized, so the newest complete checkpoint
survives any kill; but they are deleted file by file, so a kill during that deletion can leave an older
step folder half deleted under its plain name. Array data is fsynced (TensorStore's file driver) while the
JSON metadata Orbax writes is not, so a power loss can leave a renamed step folder with empty or garbled
metadata; an interrupted copy of a workdir can leave step folders with files missing or truncated.

So a step folder is used only if it is intact and restores cleanly: :func:`step_problem` checks the files
Orbax writes (step and item metadata present and valid JSON, no empty file) and the restore itself finds
missing or truncated array files. A damaged newest checkpoint is skipped with a one-line warning naming its
folder and the reason, and the one before is tried. Readers of a workdir (``edit``, ``evaluate``,
``convert export``; :mod:`rewardedit_jax.workdir`) restore only the U-Net parameters, so they
notice damage in other arrays only through the file checks. Not detected: bytes changed inside array data
with the file sizes intact (Orbax 0.12.8 stores no checksums of array chunks; such a checkpoint restores
with wrong values).

If checkpoints exist but none restores, that is an error naming every checkpoint tried, not a fresh start:
starting from scratch would silently drop the run's progress (often a wrong config or an unreachable file
system rather than damage), Orbax would refuse the new run's saves (it saves only steps newer than the
newest step folder) and ``keep_checkpoints`` would eventually delete checkpoints that might still be
recovered. Only a workdir without any complete checkpoint (leftover temporary folders do not count)
starts from scratch.

When the trainer resumes from an older checkpoint, it moves the damaged newer step folders aside to
``<step>.corrupt`` (never deletes them; readers move nothing): left in place, they would make Orbax skip
every save up to the damaged step, as it saves only steps newer than the newest step folder. One skipped
for a passing reason (a file system hiccup) can be renamed back to resume from it.

On several hosts, every host checks and restores the same candidate and all hosts agree (allgather) on
whether it succeeded, so they resume from the same step. A restore that fails on some hosts only leaves
the others waiting in Orbax's restore barrier until its timeout before the next candidate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from etils import epath

from rewardedit_jax.io import ConversionError, to_path, walk

log = logging.getLogger(__name__)

ITEMS = ("state", "data")  # the train state (flattened pytree) and the grain data-iterator state
CORRUPT_SUFFIX = ".corrupt"

# The layout Orbax 0.12.8 writes: the step metadata, and the StandardCheckpointHandler (OCDBT) item's
# tree metadata and database manifest. Other JSON files are checked when present.
STEP_METADATA = "_CHECKPOINT_METADATA"
REQUIRED_ITEM_FILES = {"state": ("_METADATA", "manifest.ocdbt")}
JSON_FILES = {STEP_METADATA, "_METADATA", "_sharding"}

T = TypeVar("T")


class CheckpointError(ConversionError):
    """Checkpoints exist but none restores; the message names each one tried and why."""


def open_manager(directory: str | os.PathLike, config) -> Any:
    """The Orbax checkpoint manager of a run's ``DIR/checkpoints`` (items :data:`ITEMS`)."""
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        to_path(directory),
        item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints,
            enable_async_checkpointing=config.async_checkpointing,
            create=True,
            cleanup_tmp_directories=True,
        ),
    )


def save(manager, step: int, state: dict, data_iterator) -> None:
    """Save the flattened train ``state`` and the data-iterator state as checkpoint ``step``."""
    import grain
    import orbax.checkpoint as ocp

    saved = manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
        ),
    )
    if not saved:  # Orbax saves only steps newer than its newest step folder
        log.warning(
            "checkpoint of step %d not saved: %s already holds step %s",
            step,
            manager.directory,
            manager.latest_step(),
        )


def restore_newest(manager, state_target: dict, data_iterator) -> tuple[int | None, dict | None]:
    """Restore the newest checkpoint that restores cleanly: ``(step, flattened state)``, the data iterator
    set to its position; ``(None, None)`` without checkpoints. Damaged newer ones are skipped with a
    warning and moved aside; :class:`CheckpointError` if none restores.

    ``state_target``: the flattened abstract train state (shapes, dtypes, shardings).
    """
    import grain
    import orbax.checkpoint as ocp

    def restore(step: int) -> dict:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(state_target),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
        )
        return manager.restore(step, args=args)["state"]

    directory = to_path(manager.directory)
    found = _newest(directory, ITEMS, restore, agree=_on_all_hosts)
    if found is None:
        return None, None
    step, state, damaged = found
    if damaged:
        _move_aside(manager, damaged)
    log.info("resumed from %s at step %d", directory / str(step), step)
    return step, state


def newest_restorable(
    directory: str | os.PathLike, items: Sequence[str], restore: Callable[[int], T]
) -> tuple[int, T] | None:
    """``(step, restore(step))`` for the newest checkpoint in ``directory`` that is intact and whose
    ``restore`` succeeds, skipping others with a warning; None if there is no checkpoint.

    A :class:`ConversionError` from ``restore`` (a readable checkpoint that does not fit) is raised, not
    skipped. Raises :class:`CheckpointError` if checkpoints exist but none restores.
    """
    found = _newest(to_path(directory), items, restore)
    return None if found is None else found[:2]


def restore_step(
    directory: str | os.PathLike, step: int, items: Sequence[str], restore: Callable[[int], T]
) -> T:
    """``restore(step)`` for the checkpoint ``step`` a user asked for: nothing is skipped, a damaged one is a
    :class:`ConversionError` naming its folder and the reason."""
    step_dir = to_path(directory) / str(step)
    problem = step_problem(step_dir, items)
    if problem is None:
        try:
            return restore(step)
        except ConversionError:
            raise
        except Exception as e:  # any failure to read the files
            problem = _describe(e)
    raise ConversionError(f"{step_dir}: the checkpoint cannot be read ({problem})")


def newest_intact_step(directory: str | os.PathLike, items: Sequence[str]) -> int | None:
    """The newest step in ``directory`` whose folder passes :func:`step_problem` (no array is read)."""
    found = newest_restorable(directory, items, lambda step: None)
    return None if found is None else found[0]


def complete_steps(directory: str | os.PathLike) -> list[int]:
    """The finalized checkpoint steps in ``directory``, newest first, as the checkpoint manager lists them
    (temporary folders of interrupted saves are not)."""
    import orbax.checkpoint as ocp

    found = ocp.path.step.standard_name_format().find_all(to_path(directory))
    return sorted((m.step for m in found), reverse=True)


def step_problem(step_dir: str | os.PathLike, items: Sequence[str]) -> str | None:
    """Why the checkpoint folder ``step_dir`` is damaged (missing item folder, missing, empty or invalid
    metadata file, empty file), or None if its files look as Orbax writes them."""
    step_dir = to_path(step_dir)
    if not step_dir.is_dir():
        return "no such folder"
    required = [STEP_METADATA]
    for item in items:
        if not (step_dir / item).is_dir():
            return f"the item folder {item}/ is missing"
        required += [f"{item}/{name}" for name in REQUIRED_ITEM_FILES.get(item, ())]
        if not any((step_dir / item).iterdir()):
            return f"the item folder {item}/ is empty"
    for name in required:
        if not (step_dir / name).is_file():
            return f"{name} is missing"
    for folder, _, files in walk(step_dir):  # epath's walk drops gs:// on the fsspec backend
        for file in sorted(files):
            path = folder / file
            name = os.path.relpath(os.fspath(path), os.fspath(step_dir))
            if path.stat().length == 0:
                return f"{name} is empty"
            if file in JSON_FILES or file.endswith(".json") or folder.name == "array_metadatas":
                try:
                    json.loads(path.read_bytes())
                except (ValueError, UnicodeDecodeError) as e:
                    return f"{name} is not valid JSON ({_one_line(str(e))})"
    return None


def _newest(
    directory: epath.Path,
    items: Sequence[str],
    restore: Callable[[int], T],
    agree: Callable[[bool], bool] = lambda ok: ok,
) -> tuple[int, T, list[epath.Path]] | None:
    """Try the checkpoints newest first; ``(step, restored, damaged newer step folders)`` or None."""
    tried: list[tuple[epath.Path, str]] = []
    for step in complete_steps(directory):
        step_dir = directory / str(step)
        problem = step_problem(step_dir, items)
        restored = None
        if not agree(problem is None):
            problem = problem or "damaged as seen from another host"
        if problem is None:
            try:
                restored = restore(step)
            except ConversionError:
                raise
            except Exception as e:  # any failure to read the files: damage, not a bug in the caller
                problem = _describe(e)
            if not agree(problem is None):
                problem = problem or "another host could not restore it"
        if problem is None:
            return step, restored, [path for path, _ in tried]
        log.warning("skipping checkpoint %s: %s", step_dir, problem)
        tried.append((step_dir, problem))
    if tried:
        listing = "; ".join(f"{path.name}: {problem}" for path, problem in tried)
        raise CheckpointError(
            f"{directory}: no checkpoint restores ({listing}); move the damaged step folders away to resume "
            "from an older one, or the whole folder to start from scratch"
        )
    return None


def _move_aside(manager, step_dirs: list[epath.Path]) -> None:
    """Rename damaged step folders to ``<step>.corrupt`` so that Orbax saves those steps again."""
    import jax

    if jax.process_index() == 0:
        for step_dir in step_dirs:
            target = step_dir.with_name(step_dir.name + CORRUPT_SUFFIX)
            n = 1
            while target.exists():
                n += 1
                target = step_dir.with_name(f"{step_dir.name}{CORRUPT_SUFFIX}-{n}")
            try:
                step_dir.rename(target)
            except Exception as e:  # object stores rename folders object by object, if at all
                raise CheckpointError(
                    f"{step_dir}: damaged, and it cannot be moved aside to {target.name} ({_describe(e)}); "
                    "move or remove it"
                ) from None
            log.warning("moved the damaged checkpoint %s to %s (kept; remove it when done)", step_dir, target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("rewardedit_jax.checkpoints.move_aside")
    manager.reload()


def _on_all_hosts(ok: bool) -> bool:
    import jax

    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _describe(error: BaseException) -> str:
    """The innermost cause of ``error`` (TensorStore's reason rather than Orbax's wrapper), one line."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {_one_line(str(error))}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
