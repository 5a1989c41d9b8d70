"""One metrics writer: ``DIR/metrics.jsonl``, TensorBoard scalars and images in ``DIR/tensorboard/``, and
optionally a Weights & Biases run (``config.metrics.wandb``).

Event files are written with tensorboardX (no TensorFlow, no torch needed). Only process 0 writes. In a
remote workdir (``gs://...``) ``metrics.jsonl`` is a :class:`rewardedit_jax.io.AppendFile`, and the event
file is written to a local temporary folder and what it gains is handed to another AppendFile: object
stores cannot append, so each object is rewritten whole at most every ``REMOTE_FLUSH_INTERVAL_S`` seconds
and when training ends. tensorboardX's own ``gs://`` and ``s3://`` writers are not used: they need other
client libraries and credentials than the rest of the workdir, upload the whole file on every flush, and
``az://`` has none.

W&B: ``wandb`` is imported only when ``config.metrics.wandb.enabled``; the run logs the same scalars and
images at the same steps, takes its API key from the environment (``WANDB_API_KEY`` or ``wandb login``),
never from the config, and keeps one run id per workdir (``DIR/wandb_run.json``) so a resumed training
continues the same W&B run.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping

from rewardedit_jax.io import (
    REMOTE_FLUSH_INTERVAL_S,
    AppendFile,
    is_remote,
    makedirs,
    read_json,
    to_path,
    write_json,
)

# The W&B run id of a workdir, so that resuming continues the run instead of starting another.
WANDB_RUN_FILE = "wandb_run.json"
WANDB_MODES = ("online", "offline", "disabled")


# tensorboardX names event files events.out.tfevents.<seconds>.<host><suffix> and truncates a file of
# that name: the suffix, the process id and a random token, keeps two writers started in the same second
# (a run resumed at once, in the same process or after a process id was reused) apart.
def _file_suffix() -> str:
    return f".{os.getpid()}.{secrets.token_hex(4)}"


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


class TensorBoardWriter:
    """Scalars and images in a new event file under ``logdir`` (local or remote).

    tensorboardX's ``EventsWriter`` writes each event when called; its ``SummaryWriter`` queues them for a
    background thread whose ``flush()`` does not wait for the queue, so a logged step could reach the file
    late, or never on a crash.
    """

    def __init__(self, logdir: str | os.PathLike, *, flush_interval_s: float = REMOTE_FLUSH_INTERVAL_S):
        from tensorboardX.event_file_writer import EventsWriter

        logdir = makedirs(logdir)
        self._upload: AppendFile | None = None
        self._tmp: pathlib.Path | None = None
        if is_remote(logdir):
            self._tmp = pathlib.Path(tempfile.mkdtemp(prefix="rewardedit-tensorboard-"))
            local_dir = self._tmp
        else:
            local_dir = pathlib.Path(logdir)
        suffix = _file_suffix()
        self._events = EventsWriter(str(local_dir / "events"), suffix)
        (self.local_file,) = local_dir.glob(f"events.out.tfevents.*{suffix}")
        self.path = logdir / self.local_file.name
        if self._tmp is not None:
            self._upload = AppendFile(self.path, flush_interval_s=flush_interval_s)
            self._copied = 0
        self._flush()

    def _event(self, step: int, summary) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._events.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboardX.summary import scalar

        for tag, value in values.items():
            self._event(step, scalar(tag, float(value)))
        self._flush()

    def image(self, step: int, tag: str, image) -> None:
        """An image summary (RGB uint8 (H, W, 3), stored as PNG): TensorBoard's Images tab."""
        import numpy as np
        from tensorboardX.summary import image as image_summary

        self._event(step, image_summary(tag, np.asarray(image, np.uint8), dataformats="HWC"))
        self._flush()

    def _flush(self) -> None:
        self._events.flush()
        self._copy()

    def _copy(self) -> None:
        """Hand what the local file gained to the remote object's AppendFile (which uploads when due)."""
        if self._upload is None:
            return
        with open(self.local_file, "rb") as f:
            f.seek(self._copied)
            new = f.read()
        self._copied += len(new)
        self._upload.write(new)
        self._upload.flush()

    def close(self) -> None:
        self._events.close()
        if self._upload is not None:
            self._copy()
            self._upload.close()  # uploads whatever is not uploaded yet
            shutil.rmtree(self._tmp, ignore_errors=True)


def check_wandb_config(settings: Mapping) -> None:
    """Fail in one line (:class:`ConfigError`) for a bad ``config.metrics.wandb``, or when it is on and the
    ``wandb`` package is missing; imports nothing."""
    import importlib.util

    from rewardedit_jax.training.sharding import ConfigError

    if not settings.get("enabled"):
        return
    if settings.get("mode") not in ("", *WANDB_MODES):
        raise ConfigError(
            f"config.metrics.wandb.mode must be '' or one of {', '.join(WANDB_MODES)}, "
            f"got {settings['mode']!r}"
        )
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "config.metrics.wandb.enabled is on but wandb is not installed (pip install wandb, or the "
            "rewardedit-jax[wandb] extra)"
        )


class WandbWriter:
    """A W&B run for the workdir (``config.metrics.wandb``, documented in ``configs/default.py``)."""

    def __init__(self, workdir: str | os.PathLike, settings: Mapping, run_config: Mapping | None = None):
        check_wandb_config({**settings, "enabled": True})
        import wandb

        self._wandb = wandb
        workdir = to_path(workdir)
        run_id = settings.get("id") or self._workdir_run_id(workdir)
        # wandb writes only local files: the configured folder, else $WANDB_DIR, else a local workdir
        # (DIR/wandb/, beside the run's other files), else wandb's default (./wandb).
        folder = (
            settings.get("dir") or os.environ.get("WANDB_DIR") or (None if is_remote(workdir) else workdir)
        )
        tags = [t.strip() for t in str(settings.get("tags") or "").split(",") if t.strip()]
        self.run = wandb.init(
            project=settings.get("project") or None,
            entity=settings.get("entity") or None,
            name=settings.get("name") or workdir.name,
            group=settings.get("group") or None,
            tags=tags or None,
            notes=settings.get("notes") or None,
            mode=settings.get("mode") or None,  # None: $WANDB_MODE, else online
            dir=None if folder is None else os.fspath(folder),
            id=run_id,
            resume="allow",
            config=dict(run_config or {}),
        )

    @staticmethod
    def _workdir_run_id(workdir) -> str:
        path = workdir / WANDB_RUN_FILE
        if path.is_file():
            return str(read_json(path)["id"])
        run_id = secrets.token_hex(4)
        write_json(path, {"id": run_id})
        return run_id

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        # A resumed training logs again the steps between its checkpoint and where it stopped; W&B keeps
        # the first values of a step and warns that it drops the later ones.
        self.run.log(dict(values), step=int(step))

    def image(self, step: int, tag: str, image) -> None:
        import numpy as np

        self.run.log({tag: self._wandb.Image(np.asarray(image, np.uint8))}, step=int(step))

    def close(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class MetricsWriter:
    """``write(step, {name: value})`` appends a JSON line to ``DIR/metrics.jsonl`` and logs the finite values
    as TensorBoard scalars (and to W&B when ``wandb`` settings with ``enabled`` are given); process 0 only
    (``enabled``)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        enabled: bool = True,
        wandb: Mapping | None = None,
        run_config: Mapping | None = None,
        flush_interval_s: float = REMOTE_FLUSH_INTERVAL_S,
    ):
        self.enabled = enabled
        if not enabled:
            return
        workdir = makedirs(workdir)
        self._jsonl = AppendFile(workdir / "metrics.jsonl", flush_interval_s=flush_interval_s)
        self._tb = TensorBoardWriter(workdir / "tensorboard", flush_interval_s=flush_interval_s)
        self._wandb = WandbWriter(workdir, wandb, run_config) if wandb and wandb.get("enabled") else None

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        self._tb.scalars(step, _finite(values))
        if self._wandb is not None:
            self._wandb.scalars(step, _finite(values))

    def image(self, step: int, tag: str, image) -> None:
        """An image summary (RGB uint8 (H, W, 3)) in TensorBoard and W&B; not in metrics.jsonl."""
        if not self.enabled:
            return
        self._tb.image(step, tag, image)
        if self._wandb is not None:
            self._wandb.image(step, tag, image)

    def close(self, exit_code: int = 0) -> None:
        """Flush and close everything; ``exit_code`` other than 0 marks the W&B run failed."""
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
            if self._wandb is not None:
                self._wandb.close(exit_code)


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The rows of ``DIR/metrics.jsonl`` (none when the file is missing)."""
    path = to_path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
