"""The training workdir: what a run writes, and how other commands read a model out of it.

    DIR/config.json        the training config (JSON)
    DIR/model/             a Flax model directory of the frozen components (vae, text_encoder, tokenizer,
                           scheduler) and the U-Net's config; the U-Net parameters live in checkpoints
    DIR/checkpoints/<N>/   Orbax checkpoints: train state (parameters, optimizer, EMA, step, RNG) and the
                           data-iterator state; damaged ones the trainer resumed past are kept as
                           <N>.corrupt/ (:mod:`rewardedit_jax.checkpoints`)
    DIR/metrics.jsonl, DIR/tensorboard/, DIR/data_order.jsonl (``config.log_data_order``)
    DIR/wandb_run.json     the W&B run id, with ``config.metrics.wandb`` (:mod:`.metrics`); wandb's own
                           files go to DIR/wandb/ when the workdir is local and no other folder is set
    DIR/eval/<N>/<name>/   an evaluator of ``config.evals`` at step N: grid.png, images/, inputs/,
                           results.json (:mod:`rewardedit_jax.training.evals`)

``convert export DIR OUT`` and every command taking ``--model`` accept a workdir (EMA weights by default).
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import numpy as np
from flax import nnx

from rewardedit_jax import checkpoints
from rewardedit_jax.io import (
    AppendFile,
    ConversionError,
    PathError,
    atomic_write_bytes,
    checkpoint_dir,
    read_bytes,
    to_path,
)

MODEL = "model"
CHECKPOINTS = "checkpoints"
READ_ITEMS = ("state",)  # what commands reading a workdir restore from a checkpoint (not the data state)


def is_workdir(path: str | os.PathLike) -> bool:
    path = to_path(path)
    return (path / MODEL / "rewardedit_model.json").is_file() and (path / CHECKPOINTS).is_dir()


def flatten_state(tree) -> dict[str, jax.Array]:
    """A pytree -> ``{"a.b.0.c": leaf}`` (string keys Orbax can store)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[".".join(_key(p) for p in path)] = leaf
    return flat


def unflatten_state(template, flat: dict):
    """Inverse of :func:`flatten_state` given a template with the same structure."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(treedef, [flat[".".join(_key(p) for p in path)] for path, _ in paths])


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The newest checkpoint step of ``workdir`` whose folder is intact (damaged newer ones are skipped with
    a warning, :mod:`rewardedit_jax.checkpoints`); None if it has no intact checkpoint."""
    try:
        return checkpoints.newest_intact_step(to_path(workdir) / CHECKPOINTS, READ_ITEMS)
    except checkpoints.CheckpointError:  # loading the model says why, naming each checkpoint
        return None


class _ItemMetadataWarningFilter(logging.Filter):
    """Drops Orbax's "Metadata file does not exist: .../state/_CHECKPOINT_METADATA" warning.

    We read the ``state`` item of a checkpoint step folder directly; the step's metadata file lives one
    level up, so Orbax warns on every load although nothing is wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "_CHECKPOINT_METADATA" not in record.getMessage()


@contextlib.contextmanager
def _quiet_item_metadata():
    logger = logging.getLogger("absl")
    quiet = _ItemMetadataWarningFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_unet_params(workdir: str | os.PathLike, unet, *, ema: bool = True, step: int | None = None) -> int:
    """Load the U-Net parameters of checkpoint ``step`` into ``unet``; returns the step.

    Default: the newest checkpoint that restores, damaged newer ones skipped with a warning.
    """
    with _quiet_item_metadata():
        return _load_unet_params(workdir, unet, ema=ema, step=step)


def _load_unet_params(workdir: str | os.PathLike, unet, *, ema: bool, step: int | None) -> int:
    try:
        workdir = checkpoint_dir(workdir)
    except PathError as e:
        raise ConversionError(str(e)) from None
    ckpt_dir = workdir / CHECKPOINTS

    def restore(step: int) -> None:
        _restore_unet_params(ckpt_dir / str(step) / "state", unet, ema=ema)

    if step is not None:
        checkpoints.restore_step(ckpt_dir, step, READ_ITEMS, restore)
        return step
    found = checkpoints.newest_restorable(ckpt_dir, READ_ITEMS, restore)
    if found is None:
        raise ConversionError(f"{workdir}: the training workdir has no checkpoint yet")
    return found[0]


def _restore_unet_params(item, unet, *, ema: bool) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        stored = ckptr.metadata(item)
        if getattr(stored, "item_metadata", True) is None:  # Orbax logged why and returned none
            raise ValueError("Orbax cannot read the metadata of the checkpoint's arrays")
        tree = getattr(getattr(stored, "item_metadata", stored), "tree", None) or dict(stored)
        names = set(tree)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in names) else "params."
    params = nnx.state(unet, nnx.Param)
    template = {prefix + k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flatten_state(params).items()}
    missing = sorted(set(template) - names)
    if missing:
        raise ConversionError(f"{item}: checkpoint lacks U-Net parameters (e.g. {missing[0]})")
    restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in template}
    with ocp.PyTreeCheckpointer() as ckptr:
        restored = ckptr.restore(
            item, args=ocp.args.PyTreeRestore(item=template, restore_args=restore_args, partial_restore=True)
        )
    values = unflatten_state(params, {k[len(prefix) :]: np.asarray(v) for k, v in restored.items()})
    nnx.update(unet, values)


class DataOrderLog:
    """``DIR/data_order.jsonl`` (``config.log_data_order``, for debugging): line *i* lists the example
    indices of the batch of step *i*.

    A run starting at step ``start`` keeps the first ``start`` lines only: a killed run may have written
    lines for steps after its last checkpoint, which the resumed run trains on again with the batches it
    logs anew. Batches fetched after step ``total_steps`` (never trained on) are not logged. ``write``
    takes one line.
    """

    def __init__(self, workdir: str | os.PathLike, start: int, total_steps: int):
        path = to_path(workdir) / "data_order.jsonl"
        if path.is_file():
            content = read_bytes(path)
            lines = content.splitlines(keepends=True)[:start]
            if lines and not lines[-1].endswith(b"\n"):  # cut off mid-write
                lines.pop()
            kept = b"".join(lines)
            if kept != content:
                atomic_write_bytes(path, kept)
        self._file = AppendFile(path)
        self._lines, self._total = start, total_steps

    def write(self, line: str) -> None:
        if self._lines < self._total:
            self._file.write(line)
            self._lines += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
