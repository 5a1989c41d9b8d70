"""InstructPix2Pix image sources in a manual directory: detection, reading, and joins with RewardEdit20K keys.

Two layouts of the InstructPix2Pix clip-filtered data are supported (docs/sources.md, "Data formats"):

- **folders** (the original layout): a root holding folders, each with `prompt.json` (`edit` is the
  instruction) and up to 4 pairs `{seed}_0.jpg` (source) / `{seed}_1.jpg` (edited); optionally `seeds.json`.
  The folders may also sit in `<root>/train/` (the authors' `pix2pix-clip-filtered-hf/train/<key>/`).
- **parquet** (the HF hub layout): shards `*.parquet` in the root or in `<root>/data/`, with columns
  `edit_prompt`, `original_image`, `edited_image` (images are structs {bytes, path}); one row per folder.

`detect_image_source(manual_dir)` finds the source in the manual directory itself or in exactly one
immediate subfolder (so the user may drop `RewardEdit_20K.json` next to the InstructPix2Pix folders, or the
InstructPix2Pix download next to the JSON), and refuses to guess when it finds several.

RewardEdit20K keys name InstructPix2Pix samples, exactly how is unverified; `plan_join` supports
key = folder name, key = parquet row index (over the shards in name order), key = seed (from `seeds.json`,
the folders' file names, or the parquet image `path`), picks the one that matches when `join="auto"`, and
fails with the match counts of each when several match.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rewardedit_jax.data import validation
from rewardedit_jax.data.validation import ManualDataError, Skip

FOLDERS = "folders"
PARQUET = "parquet"

JOIN_FOLDER = "folder"
JOIN_ROW_INDEX = "row_index"
JOIN_SEED = "seed"
JOIN_STRATEGIES = (JOIN_FOLDER, JOIN_ROW_INDEX, JOIN_SEED)

# `{seed}_0.jpg` is the source image, `{seed}_1.jpg` the edited image.
_PAIR_FILE = re.compile(r"^(?P<seed>.+)_(?P<side>[01])\.(?:jpe?g|png)$", re.IGNORECASE)
_CANONICAL_INT = re.compile(r"^(0|[1-9][0-9]*)$")
_PROBE_LIMIT = 64  # folders looked into when recognizing a folder layout


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """One (source, edited) pair of a folder: the seed and the two file paths (either may be missing)."""

    seed: str
    source_path: Path | None
    edited_path: Path | None


def _sort_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _prompt_instruction(prompt: Any) -> str:
    if isinstance(prompt, dict) and isinstance(prompt.get("edit"), str) and prompt["edit"].strip():
        return prompt["edit"].strip()
    raise Skip(validation.MISSING_INSTRUCTION, "prompt.json has no 'edit' text")


class FolderSource:
    """The original InstructPix2Pix layout: `<root>/<folder>/{prompt.json, {seed}_0.jpg, {seed}_1.jpg}`."""

    kind = FOLDERS

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._seed_index: dict[str, list[tuple[str, str]]] | None = None

    def __repr__(self) -> str:
        return f"FolderSource({self.root})"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": os.fspath(self.root)}

    def folder_names(self) -> list[str]:
        """Names of the sample folders (directories or links to directories), in numeric-then-name order."""
        with os.scandir(self.root) as entries:
            names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
        return sorted(names, key=_sort_key)

    def folder(self, name: str) -> Path:
        """The folder of a key; `Skip(unsafe_key)` if it escapes the root, `unmatched_key` if absent."""
        path = validation.resolve_inside(self.root, name)
        if not path.is_dir():
            raise Skip(validation.UNMATCHED_KEY, f"no folder {name!r} in {self.root}")
        return path

    def has_folder(self, name: str) -> bool:
        """Whether `root/name` is a directory (links included: `folder` refuses links out later)."""
        try:
            return (self.root / validation.check_relative_key(name)).is_dir()
        except Skip:
            return False

    def pairs(self, name: str) -> list[ImagePair]:
        """The image pairs of a folder, sorted by seed. A pair with one file missing keeps `None` there."""
        folder = self.folder(name)
        sides: dict[str, dict[str, Path]] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _PAIR_FILE.match(entry.name)
                if match:
                    sides.setdefault(match["seed"], {})[match["side"]] = folder / entry.name
        return [
            ImagePair(seed, files.get("0"), files.get("1"))
            for seed, files in sorted(sides.items(), key=lambda item: _sort_key(item[0]))
        ]

    def instruction(self, name: str) -> str:
        path = self.folder(name) / "prompt.json"
        if not path.is_file():
            raise Skip(validation.MISSING_INSTRUCTION, f"{name}/prompt.json missing")
        try:
            prompt = validation.load_json(path)
        except ManualDataError as e:
            raise Skip(validation.MISSING_INSTRUCTION, str(e)) from None
        return _prompt_instruction(prompt)

    def image_path(self, name: str, path: Path | None, side: str) -> Path:
        """A pair file checked to stay inside the root (links out are refused)."""
        if path is None:
            raise Skip(validation.MISSING_IMAGE, f"no {side} image")
        return validation.resolve_inside(self.root, f"{name}/{path.name}")

    def seed_index(self) -> dict[str, list[tuple[str, str]]]:
        """seed -> [(folder, seed)]: from `seeds.json` when present, else by listing every folder."""
        if self._seed_index is None:
            index: dict[str, list[tuple[str, str]]] = {}
            seeds_file = self.root / "seeds.json"
            if seeds_file.is_file():
                for item in validation.load_json(seeds_file):
                    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], list):
                        for seed in item[1]:
                            index.setdefault(str(seed), []).append((str(item[0]), str(seed)))
            else:
                for name in self.folder_names():
                    with os.scandir(self.root / name) as entries:
                        seeds = {m["seed"] for e in entries if (m := _PAIR_FILE.match(e.name))}
                    for seed in seeds:
                        index.setdefault(seed, []).append((name, seed))
            self._seed_index = index
        return self._seed_index


@dataclasses.dataclass(frozen=True)
class ParquetRow:
    """One row of the HF parquet shards, addressed by its global row index."""

    row_index: int
    instruction: str | None
    source_bytes: bytes | None
    edited_bytes: bytes | None
    source_path: str | None


class ParquetSource:
    """The HF hub layout: parquet shards with `edit_prompt`, `original_image`, `edited_image` columns."""

    kind = PARQUET
    _columns = ("edit_prompt", "original_image", "edited_image")

    def __init__(self, shards: Sequence[str | os.PathLike]):
        import pyarrow.parquet as pq  # Only needed for this layout.

        self.shards = [Path(s) for s in shards]
        self._files = [pq.ParquetFile(s) for s in self.shards]
        self._offsets = []
        total = 0
        for f in self._files:
            self._offsets.append(total)
            total += f.metadata.num_rows
        self.num_rows = total
        for shard, f in zip(self.shards, self._files):
            missing = [c for c in self._columns if c not in f.schema_arrow.names]
            if missing:
                raise ManualDataError(f"{shard} lacks the InstructPix2Pix columns {missing}")

    def __repr__(self) -> str:
        return f"ParquetSource({len(self.shards)} shards, {self.num_rows} rows)"

    def describe(self) -> dict[str, Any]:
        root = os.path.commonpath([os.fspath(s.parent) for s in self.shards])
        return {"kind": self.kind, "root": root, "shards": len(self.shards), "rows": self.num_rows}

    def source_paths(self) -> Iterator[tuple[int, str | None]]:
        """(row index, `original_image.path`) for every row, reading only that nested column."""
        for offset, f in zip(self._offsets, self._files):
            column = f.schema_arrow.field("original_image")
            if hasattr(column.type, "get_field_index") and column.type.get_field_index("path") >= 0:
                table = f.read(columns=["original_image.path"])
                paths = table.column("original_image").combine_chunks().field("path").to_pylist()
            else:
                paths = [None] * f.metadata.num_rows
            for i, path in enumerate(paths):
                yield offset + i, path

    def rows(self, wanted: Iterable[int] | None = None) -> Iterator[ParquetRow]:
        """Rows in index order; only the row groups holding `wanted` rows are read when it is given."""
        wanted_set = None if wanted is None else set(wanted)
        for offset, f in zip(self._offsets, self._files):
            start = offset
            for group in range(f.metadata.num_row_groups):
                size = f.metadata.row_group(group).num_rows
                if wanted_set is not None and not any(i in wanted_set for i in range(start, start + size)):
                    start += size
                    continue
                table = f.read_row_group(group, columns=list(self._columns))
                prompts = table.column("edit_prompt").to_pylist()
                sources = table.column("original_image").to_pylist()
                editeds = table.column("edited_image").to_pylist()
                for i in range(size):
                    if wanted_set is None or start + i in wanted_set:
                        source_bytes, source_path = _image_cell(sources[i])
                        edited_bytes, _ = _image_cell(editeds[i])
                        yield ParquetRow(start + i, prompts[i], source_bytes, edited_bytes, source_path)
                start += size


def _image_cell(cell: Any) -> tuple[bytes | None, str | None]:
    if isinstance(cell, dict):
        return cell.get("bytes"), cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell), None
    return None, None


def seed_and_folder_of_path(path: str | None) -> tuple[str | None, str | None]:
    """(seed, folder) of an image path like `0000123/4567_0.jpg`; None where it is not present."""
    if not path:
        return None, None
    parts = path.replace("\\", "/").split("/")
    match = _PAIR_FILE.match(parts[-1])
    seed = match["seed"] if match else None
    folder = parts[-2] if len(parts) >= 2 and parts[-2] else None
    return seed, folder


# ------------------------------------------------------------------------------------------------------
# Detection.


def _parquet_shards(directory: Path) -> list[Path]:
    for candidate in (directory, directory / "data"):
        if candidate.is_dir():
            shards = sorted(p for p in candidate.glob("*.parquet") if p.is_file())
            if shards:
                return shards
    return []


def _folder_root(directory: Path) -> Path | None:
    for candidate in (directory, directory / "train"):
        if not candidate.is_dir():
            continue
        probed = 0
        with os.scandir(candidate) as entries:
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith("."):
                    if (Path(entry.path) / "prompt.json").is_file():
                        return candidate
                    probed += 1
                    if probed >= _PROBE_LIMIT:
                        break
    return None


def recognize(directory: str | os.PathLike) -> FolderSource | ParquetSource | None:
    """The InstructPix2Pix source held directly by `directory`, or None. Both layouts at once is an error."""
    directory = Path(directory)
    shards = _parquet_shards(directory)
    folder_root = _folder_root(directory)
    if shards and folder_root is not None:
        raise ManualDataError(
            f"{directory} holds both parquet shards and InstructPix2Pix folders; move one away or choose "
            "with the builder config `image_dir`."
        )
    if shards:
        return ParquetSource(shards)
    if folder_root is not None:
        return FolderSource(folder_root)
    return None


LAYOUT_HELP = (
    "Expected InstructPix2Pix data in the manual directory or in one subfolder of it: either folders "
    "`<folder>/prompt.json` + `<seed>_0.jpg` / `<seed>_1.jpg` (optionally under `train/`), or the HF "
    "parquet shards `*.parquet` (optionally under `data/`)."
)


def detect_image_source(manual_dir: str | os.PathLike, image_dir: str | None = None):
    """The image source of a manual directory: itself, its one subfolder holding one, or `image_dir`."""
    manual_dir = Path(manual_dir)
    if image_dir:
        try:
            root = validation.resolve_inside(manual_dir, image_dir)
        except Skip as e:
            raise ManualDataError(f"image_dir {image_dir!r}: {e}") from None
        source = recognize(root) if root.is_dir() else None
        if source is None:
            raise ManualDataError(
                f"image_dir {image_dir!r} ({root}) holds no InstructPix2Pix data. {LAYOUT_HELP}"
            )
        return source
    source = recognize(manual_dir)
    if source is not None:
        return source
    found = {}
    with os.scandir(manual_dir) as entries:
        subdirs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    for name in subdirs:
        candidate = recognize(manual_dir / name)
        if candidate is not None:
            found[name] = candidate
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise ManualDataError(f"No InstructPix2Pix images found in {manual_dir}. {LAYOUT_HELP}")
    raise ManualDataError(
        f"Several subfolders of {manual_dir} hold InstructPix2Pix data: {sorted(found)}. Choose one with the "
        'builder config `image_dir`, e.g. --config \'{"name": "custom", "image_dir": "..."}\'.'
    )


def find_file(manual_dir: str | os.PathLike, filename: str) -> Path:
    """`filename` in the manual directory itself or in exactly one immediate subfolder of it."""
    manual_dir = Path(manual_dir)
    if not manual_dir.is_dir():
        raise ManualDataError(f"Manual directory {manual_dir} does not exist.")
    direct = manual_dir / filename
    if direct.is_file():
        return direct
    with os.scandir(manual_dir) as entries:
        found = sorted(Path(e.path) / filename for e in entries if e.is_dir() and not e.name.startswith("."))
    found = [p for p in found if p.is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ManualDataError(f"{filename} not found in {manual_dir} or in its subfolders.")
    raise ManualDataError(f"Several {filename} found: {[os.fspath(p) for p in found]}; keep one.")


# ------------------------------------------------------------------------------------------------------
# Joins of RewardEdit20K keys with an image source.


@dataclasses.dataclass
class JoinPlan:
    """Where each matched key's image pair is.

    `locations[key]` is, per strategy: folder -> folder name; seed (folders) -> [(folder, seed), ...];
    row_index / seed / folder (parquet) -> [row index, ...]. `counts` holds the keys matched under every
    strategy that was evaluated.
    """

    strategy: str
    locations: dict[str, Any]
    counts: dict[str, int]

    def summary(self, num_keys: int) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "matched": len(self.locations),
            "unmatched": num_keys - len(self.locations),
            "matched_by_strategy": dict(self.counts),
        }


def _candidate_locations(keys: Sequence[str], source, strategy: str) -> dict[str, Any]:
    if isinstance(source, FolderSource):
        if strategy == JOIN_FOLDER:
            return {k: k for k in keys if source.has_folder(k)}
        if strategy == JOIN_SEED:
            index = source.seed_index()
            return {k: index[k] for k in keys if k in index}
        return {}
    if strategy == JOIN_ROW_INDEX:
        return {k: [int(k)] for k in keys if _CANONICAL_INT.match(k) and int(k) < source.num_rows}
    by_path: dict[str, list[int]] = {}
    for row, path in source.source_paths():
        seed, folder = seed_and_folder_of_path(path)
        value = seed if strategy == JOIN_SEED else folder
        if value is not None:
            by_path.setdefault(value, []).append(row)
    return {k: by_path[k] for k in keys if k in by_path}


def plan_join(keys: Sequence[str], source, strategy: str = "auto") -> JoinPlan:
    """Matches keys to image pairs. `auto` evaluates every strategy and needs exactly one to match."""
    if strategy != "auto" and strategy not in JOIN_STRATEGIES:
        raise ManualDataError(f"Unknown join strategy {strategy!r}; use one of {('auto', *JOIN_STRATEGIES)}.")
    applicable = [JOIN_FOLDER, JOIN_SEED] if isinstance(source, FolderSource) else list(JOIN_STRATEGIES)
    if strategy != "auto":
        if strategy not in applicable:
            raise ManualDataError(f"Join {strategy!r} does not apply to the {source.kind} layout.")
        locations = _candidate_locations(keys, source, strategy)
        return JoinPlan(strategy, locations, {strategy: len(locations)})
    candidates = {name: _candidate_locations(keys, source, name) for name in applicable}
    counts = {name: len(locations) for name, locations in candidates.items()}
    matching = [name for name, count in counts.items() if count]
    if not matching:
        example = ", ".join(repr(k) for k in list(keys)[:3])
        raise ManualDataError(
            f"No key of the reward file (e.g. {example}) matches an image pair of {source!r} as a "
            f"folder name, a parquet row index or a seed ({counts})."
        )
    if len(matching) > 1:
        raise ManualDataError(
            f"Keys match image pairs under several join strategies {counts}; choose one with the builder "
            'config `join`, e.g. --config \'{"name": "custom", "join": "' + matching[0] + "\"}'."
        )
    return JoinPlan(matching[0], candidates[matching[0]], counts)
