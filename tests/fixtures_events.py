"""Reading back what the metrics writer wrote, through the readers of the tools it writes for:
TensorBoard's own event reader (``EventAccumulator``) and W&B's run file (its records parsed with W&B's own
protobuf schema)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np


def tensorboard_run(logdir: Path):
    """An ``EventAccumulator`` over the event files in ``logdir``, every scalar and image kept."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in ``logdir``'s event files."""
    run = tensorboard_run(logdir)
    return {tag: {e.step: e.value for e in run.Scalars(tag)} for tag in run.Tags()["scalars"]}


def tensorboard_images(logdir: Path) -> dict[tuple[str, int], np.ndarray]:
    """(tag, step) -> the RGB image of every image summary in ``logdir``'s event files."""
    from PIL import Image

    run = tensorboard_run(logdir)
    images = {}
    for tag in run.Tags()["images"]:
        for event in run.Images(tag):
            array = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
            assert array.shape[:2] == (event.height, event.width)
            images[(tag, event.step)] = array
    return images


# W&B's run file (``run-<id>.wandb``): a 7-byte header (":W&B", 0xBEE1, version 0), then records in
# 32 KiB blocks, each chunk behind a 7-byte header (checksum, length, type: full, first, middle, last),
# a block's tail shorter than a header left as padding.
_WANDB_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _read_wandb_records(data: bytes) -> list:
    from wandb.proto import wandb_internal_pb2

    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # zero padding, or a chunk still being written
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def wandb_records(path: Path, timeout_s: float = 60) -> list:
    """The ``wandb_internal_pb2.Record`` messages of a finished W&B run's file, in order.

    ``run.finish()`` returns before wandb's service process has written the last records, so this waits
    (up to ``timeout_s``) for the run's exit record."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B", path
        records = _read_wandb_records(data)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout_s} s")
        time.sleep(0.05)


def wandb_run_files(wandb_dir: Path) -> list[Path]:
    """The run files under a W&B folder (``WANDB_DIR``), oldest first."""
    return sorted(Path(wandb_dir).glob("wandb/*run-*/run-*.wandb"))


def wandb_history(run_file: Path) -> dict[int, dict]:
    """step -> {key: value (parsed JSON; an image: {"_type": "image-file", "path": ...})} of the rows a W&B
    run logged."""
    import json

    rows: dict[int, dict] = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            *parents, leaf = [item.key] if item.key else list(item.nested_key)
            node = row
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = json.loads(item.value_json)
        rows.setdefault(int(row.pop("_step")), {}).update(row)
    return rows


def wandb_run_id(run_file: Path) -> str:
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_id
    raise AssertionError(f"{run_file}: no run record")
