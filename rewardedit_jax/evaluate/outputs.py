"""The output folder of an evaluation: where each edit's files go, and its append-only per-edit records."""

from __future__ import annotations

import hashlib
import json
import os
import platform

from etils import epath

from rewardedit_jax.evaluators import Benchmark, BenchmarkEdit, EditRecord
from rewardedit_jax.io import AppendFile, to_path


class OutputFolder:
    """``images/<index>_<id>.png`` (the edits), ``inputs/`` (the fitted sources, one per Real-Edit photo),
    ``targets/`` (the references) of a benchmark's edits, under ``out``."""

    def __init__(self, out: epath.Path, bench: Benchmark):
        self.out, self.bench = out, bench

    def image_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "images" / f"{edit.name}.png"

    def input_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "inputs" / self.bench.input_name(edit)

    def target_path(self, edit: BenchmarkEdit) -> epath.Path:
        return self.out / "targets" / f"{edit.name}.png"

    def relative(self, path: epath.Path) -> str:
        return path.relative_to(self.out).as_posix()

    def record(
        self,
        edit: BenchmarkEdit,
        *,
        images: bool,
        source: bool = False,
        sent_size: tuple[int, int] | None = None,
    ) -> EditRecord:
        """The edit as an evaluator scores it: its files' paths, and with ``images`` the edit and its
        reference read back (and its stored source with ``source``)."""
        record = EditRecord(
            edit,
            source=None,
            edited=None,
            source_path=str(self.input_path(edit)),
            edited_path=str(self.image_path(edit)),
            sent_size=sent_size,
        )
        if images:
            record.edited = open_rgb(self.image_path(edit))
            record.target = self.bench.target(edit) if self.bench.has_references else None
            record.source = self.bench.source(edit) if source else None
        return record


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


def open_rgb(path: str | os.PathLike):
    from PIL import Image

    with to_path(path).open("rb") as f, Image.open(f) as opened:
        return opened.convert("RGB")


def sha256(path: epath.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def versions_info() -> dict:
    """The Python and package versions an output was made with."""
    import importlib.metadata

    import rewardedit_jax

    out = {"python": platform.python_version(), "rewardedit_jax": rewardedit_jax.__version__}
    for dist in ("numpy", "jax", "jaxlib", "flax", "pillow", "tensorflow-datasets", "openai", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
