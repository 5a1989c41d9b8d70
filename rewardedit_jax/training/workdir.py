"""The training workdir: what a run writes, and how other commands read a model out of it.

    DIR/config.json        the training config (JSON)
    DIR/model/             a Flax model directory of the frozen components (vae, text_encoder, tokenizer,
                           scheduler) and the U-Net's config; the U-Net parameters live in checkpoints
    DIR/checkpoints/<N>/   Orbax checkpoints: train state (parameters, optimizer, EMA, step, RNG) and the
                           data-iterator state
    DIR/metrics.jsonl, DIR/tensorboard/

``convert export DIR OUT`` and every command taking ``--model`` accept a workdir (EMA weights by default).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from rewardedit_jax.convert.weights import ConversionError

MODEL = "model"
CHECKPOINTS = "checkpoints"


def is_workdir(path: str | Path) -> bool:
    path = Path(path)
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


def latest_step(workdir: Path) -> int | None:
    ckpt = Path(workdir) / CHECKPOINTS
    steps = [int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()] if ckpt.is_dir() else []
    return max(steps) if steps else None


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


def load_unet_params(workdir: Path, unet, *, ema: bool = True, step: int | None = None) -> int:
    """Load the U-Net parameters of checkpoint ``step`` (default: latest) into ``unet``; returns the step."""
    with _quiet_item_metadata():
        return _load_unet_params(workdir, unet, ema=ema, step=step)


def _load_unet_params(workdir: Path, unet, *, ema: bool, step: int | None) -> int:
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    step = latest_step(workdir) if step is None else step
    if step is None:
        raise ConversionError(f"{workdir}: the training workdir has no checkpoint yet")
    item = workdir / CHECKPOINTS / str(step) / "state"
    with ocp.StandardCheckpointer() as ckptr:
        stored = ckptr.metadata(item)
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
    return step
