"""One metrics writer: ``DIR/metrics.jsonl`` and TensorBoard scalars (and images) in ``DIR/tensorboard/``.

The TensorBoard event file is written directly (TFRecord framing + the ``Event``/``Summary`` protobuf
wire format for scalars and PNG images), so training never imports TensorFlow. Only process 0 writes. In
a remote workdir (``gs://...``) both files are :class:`rewardedit_jax.io.AppendFile` objects: object stores
cannot append, so each is rewritten whole at most every ``REMOTE_FLUSH_INTERVAL_S`` seconds and when
training ends.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from collections.abc import Mapping

from rewardedit_jax.io import AppendFile, makedirs, to_path
from rewardedit_jax.report import png_bytes

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint((number << 3) | wire_type) + payload


def _length_delimited(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """Serialized ``Event{wall_time, step, summary{value{tag, simple_value}}}``."""
    value_msg = _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value)))
    summary = _length_delimited(1, value_msg)
    return (
        _field(1, 1, struct.pack("<d", wall_time))
        + _field(2, 0, _varint(int(step)))
        + _length_delimited(5, summary)
    )


def image_event(tag: str, png: bytes, height: int, width: int, step: int, wall_time: float) -> bytes:
    """Serialized ``Event{wall_time, step, summary{value{tag, image{height, width, colorspace=3, png}}}}``."""
    image = _field(1, 0, _varint(height)) + _field(2, 0, _varint(width)) + _field(3, 0, _varint(3))
    image += _length_delimited(4, png)
    value_msg = _length_delimited(1, tag.encode()) + _length_delimited(4, image)
    return (
        _field(1, 1, struct.pack("<d", wall_time))
        + _field(2, 0, _varint(int(step)))
        + _length_delimited(5, _length_delimited(1, value_msg))
    )


def file_version_event(wall_time: float) -> bytes:
    return _field(1, 1, struct.pack("<d", wall_time)) + _length_delimited(3, b"brain.Event:2")


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class TensorBoardWriter:
    def __init__(self, logdir: str | os.PathLike):
        logdir = makedirs(logdir)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._file = AppendFile(logdir / name)
        self._file.write(_record(file_version_event(time.time())))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        now = time.time()
        for tag, value in values.items():
            self._file.write(_record(scalar_event(tag, value, step, now)))
        self._file.flush()

    def image(self, step: int, tag: str, image) -> None:
        """An image summary (RGB uint8 (H, W, 3), stored as PNG): TensorBoard's Images tab."""
        height, width = image.shape[:2]
        self._file.write(_record(image_event(tag, png_bytes(image), height, width, step, time.time())))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MetricsWriter:
    """``write(step, {name: value})`` appends a JSON line and TensorBoard scalars (process 0 only)."""

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        workdir = makedirs(workdir)
        self._jsonl = AppendFile(workdir / "metrics.jsonl")
        self._tb = TensorBoardWriter(workdir / "tensorboard")

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        self._tb.scalars(step, {k: float(v) for k, v in values.items() if math.isfinite(float(v))})

    def image(self, step: int, tag: str, image) -> None:
        """A TensorBoard image summary (RGB uint8 (H, W, 3)); not in metrics.jsonl."""
        if self.enabled:
            self._tb.image(step, tag, image)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    path = to_path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
