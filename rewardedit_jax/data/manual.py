"""Examples of the manually downloaded datasets, validated, for the TFDS builders in `tfds_builders/`.

Each generator yields `(key, example)` with encoded image bytes (checked to decode) and records in a
`validation.BuildSummary` what it kept and what it skipped and why:

- `reward_edit_examples`: RewardEdit20K (`RewardEdit_20K.json`, docs/sources.md, "Data formats") joined
  with its InstructPix2Pix image pairs (`sources.py` finds the images and joins the keys).
- `instruct_pix2pix_examples`: every image pair of the InstructPix2Pix source (stage-1 data).
- `real_edit_examples`: the Real-Edit benchmark, 80 photos x 7 instructions
  (docs/sources.md, "Real-Edit evaluation protocol").

The builders stay thin: they declare features and splits and call these.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewardedit_jax.data import images, sources, validation
from rewardedit_jax.data.validation import BuildSummary, ManualDataError, Skip

REWARDS_FILE = "RewardEdit_20K.json"
REAL_EDIT_FILE = "real_edit_instruct.json"
REAL_EDIT_DIR = "Real-Edit"
REAL_EDIT_TYPES = ("Local", "Remove", "Add", "Texture", "Background", "Global", "Style")
REAL_EDIT_INSTRUCTIONS_PER_IMAGE = len(REAL_EDIT_TYPES)
REAL_EDIT_IMAGES = 80  # the benchmark: 80 photos x 7 edit types = 560 edits (docs/sources.md)
REAL_EDIT_EDITS = REAL_EDIT_IMAGES * len(REAL_EDIT_TYPES)
MAX_LISTED = 8  # images named in a Real-Edit layout error (then "... and N more")

MULTI_PAIR_SKIP = "skip"
MULTI_PAIR_FIRST = "first"
MULTI_PAIR_POLICIES = (MULTI_PAIR_SKIP, MULTI_PAIR_FIRST)

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RewardEditOptions:
    """How `reward_edit` finds and joins its data (the fields of its builder config).

    join: `auto` (the one strategy that matches, else an error), `folder`, `row_index` or `seed`.
    multi_pair_policy: a key whose folder (or seed, or parquet match) has several image pairs is `skip`ped
      and counted as `ambiguous_pairs`, or resolved to the `first` pair (lowest seed / row index).
    image_dir: the image source's folder relative to the manual directory; None detects it.
    rewards_file: the reward JSON's file name, in the manual directory or one subfolder of it.
    """

    join: str = "auto"
    multi_pair_policy: str = MULTI_PAIR_SKIP
    image_dir: str | None = None
    rewards_file: str = REWARDS_FILE

    def __post_init__(self):
        if self.multi_pair_policy not in MULTI_PAIR_POLICIES:
            raise ManualDataError(
                f"multi_pair_policy must be one of {MULTI_PAIR_POLICIES}, got {self.multi_pair_policy!r}"
            )


def _relative(path: Path, manual_dir: str | os.PathLike) -> str:
    try:
        return os.fspath(Path(path).resolve().relative_to(Path(manual_dir).resolve())) or "."
    except ValueError:
        return os.fspath(path)


def _describe_source(source, manual_dir) -> dict[str, Any]:
    description = source.describe()
    description["root"] = _relative(Path(description["root"]), manual_dir)
    return description


def _pick(candidates: list, policy: str, what: str) -> Any:
    if not candidates:
        raise Skip(validation.MISSING_IMAGE, f"no image pair for {what}")
    if len(candidates) > 1 and policy == MULTI_PAIR_SKIP:
        raise Skip(validation.AMBIGUOUS_PAIRS, f"{len(candidates)} image pairs for {what}")
    return candidates[0]


def _folder_pair_example(source: sources.FolderSource, folder: str, pair: sources.ImagePair) -> Example:
    source_path = source.image_path(folder, pair.source_path, "source")
    edited_path = source.image_path(folder, pair.edited_path, "edited")
    source_bytes = images.read_checked_image(source_path, f"{folder}/{source_path.name}")
    edited_bytes = images.read_checked_image(edited_path, f"{folder}/{edited_path.name}")
    instruction = source.instruction(folder)
    return {"source_image": source_bytes, "edited_image": edited_bytes, "instruction": instruction}


def _row_example(row: sources.ParquetRow) -> Example:
    source_bytes = images.checked_image_bytes(row.source_bytes, f"row {row.row_index} original_image")
    edited_bytes = images.checked_image_bytes(row.edited_bytes, f"row {row.row_index} edited_image")
    if not isinstance(row.instruction, str) or not row.instruction.strip():
        raise Skip(validation.MISSING_INSTRUCTION, f"row {row.row_index} has no edit_prompt")
    return {
        "source_image": source_bytes,
        "edited_image": edited_bytes,
        "instruction": row.instruction.strip(),
    }


def reward_edit_examples(
    manual_dir: str | os.PathLike, options: RewardEditOptions, summary: BuildSummary
) -> Iterator[tuple[str, Example]]:
    """RewardEdit20K examples: key, source/edited image bytes, instruction, reward scores and texts."""
    rewards_path = sources.find_file(manual_dir, options.rewards_file)
    rewards, repeated = validation.load_json_with_duplicates(rewards_path)
    duplicates = set(repeated)
    if not isinstance(rewards, dict):
        raise ManualDataError(
            f"{rewards_path} must hold a JSON object mapping keys to 3 perspectives, "
            f"not {type(rewards).__name__}"
        )
    source = sources.detect_image_source(manual_dir, options.image_dir)
    summary.facts["rewards_file"] = _relative(rewards_path, manual_dir)
    summary.facts["rewards_keys"] = len(rewards)
    summary.facts["image_source"] = _describe_source(source, manual_dir)
    summary.facts["multi_pair_policy"] = options.multi_pair_policy

    labelled: dict[str, tuple[Any, tuple[str, ...]]] = {}
    for key, entry in rewards.items():
        try:
            if key in duplicates:
                raise Skip(validation.DUPLICATE_KEY, "several values in the JSON file")
            validation.check_relative_key(key)
            labelled[key] = validation.parse_rewards(entry)
        except Skip as e:
            summary.skip(key, e)
    if not labelled:
        summary.finish()  # Raises: nothing kept.
    plan = sources.plan_join(list(labelled), source, options.join)
    summary.facts["join"] = plan.summary(len(labelled))
    for key in labelled:
        if key not in plan.locations:
            summary.skip(key, Skip(validation.UNMATCHED_KEY, f"no image pair by {plan.strategy}"))

    def with_rewards(key: str, example: Example) -> tuple[str, Example]:
        scores, texts = labelled[key]
        return key, {"key": key, **example, "reward_scores": scores, "reward_texts": list(texts)}

    policy = options.multi_pair_policy
    if isinstance(source, sources.FolderSource):

        def located_example(key: str, location) -> Example:
            if plan.strategy == sources.JOIN_FOLDER:
                folder, pair = key, _pick(source.pairs(key), policy, f"folder {key!r}")
            else:  # seed: [(folder, seed), ...]
                folder, seed = _pick(sorted(location), policy, f"seed {key!r}")
                pair = next((p for p in source.pairs(folder) if p.seed == seed), None)
                if pair is None:
                    raise Skip(validation.MISSING_IMAGE, f"no files for seed {seed} in {folder}")
            return _folder_pair_example(source, folder, pair)

        for key, location in plan.locations.items():
            example = summary.attempt(key, located_example, key, location)
            if example is not None:
                yield with_rewards(key, example)
    else:
        keys_of_row: dict[int, list[str]] = {}
        for key, rows in plan.locations.items():
            try:
                row = _pick(sorted(rows), policy, f"key {key!r} ({len(rows)} parquet rows)")
            except Skip as e:
                summary.skip(key, e)
                continue
            keys_of_row.setdefault(row, []).append(key)
        for row in source.rows(keys_of_row):
            for key in keys_of_row[row.row_index]:
                example = summary.attempt(key, _row_example, row)
                if example is not None:
                    yield with_rewards(key, example)


def instruct_pix2pix_examples(
    manual_dir: str | os.PathLike, summary: BuildSummary, image_dir: str | None = None
) -> Iterator[tuple[str, Example]]:
    """Every image pair of the InstructPix2Pix source: key `<folder>/<seed>` (folders) or the row index."""
    source = sources.detect_image_source(manual_dir, image_dir)
    summary.facts["image_source"] = _describe_source(source, manual_dir)
    if isinstance(source, sources.FolderSource):
        for folder in source.folder_names():
            try:
                pairs = source.pairs(folder)
            except Skip as e:
                summary.skip(folder, e)
                continue
            for pair in pairs:
                key = f"{folder}/{pair.seed}"
                example = summary.attempt(key, _folder_pair_example, source, folder, pair)
                if example is not None:
                    yield key, {"key": key, **example}
    else:
        for row in source.rows():
            key = str(row.row_index)
            example = summary.attempt(key, _row_example, row)
            if example is not None:
                yield key, {"key": key, **example}


_TYPE_PREFIX = re.compile(r"^\s*(?:\d+\s*[.)]\s*)?(?P<head>[A-Za-z][A-Za-z ]*?)\s*[.:]")


def parse_real_edit_instruction(text: Any) -> tuple[str, str]:
    """(edit type, instruction) of one Real-Edit instruction string.

    The edit type is the text before the first "." (tolerating a leading list number and a ":" instead of
    "."), and must be one of the 7 types (any case); the instruction is the text after the last ": ", or
    after the type when there is none (official `eval.py`; docs/sources.md, "Real-Edit evaluation protocol";
    the exact format is unverified).
    """
    if not isinstance(text, str) or not text.strip():
        raise Skip(validation.BAD_INSTRUCTION, repr(text))
    match = _TYPE_PREFIX.match(text)
    by_name = {t.lower(): t for t in REAL_EDIT_TYPES}
    edit_type = by_name.get(match["head"].strip().lower()) if match else None
    if edit_type is None:
        raise Skip(validation.UNKNOWN_EDIT_TYPE, repr(text[:60]))
    instruction = text.rsplit(": ", 1)[1] if ": " in text else text[match.end() :]
    instruction = instruction.strip()
    if not instruction:
        raise Skip(validation.BAD_INSTRUCTION, repr(text))
    return edit_type, instruction


def _find_real_edit_dir(manual_dir: Path, json_path: Path) -> Path:
    for candidate in (json_path.parent / REAL_EDIT_DIR, manual_dir / REAL_EDIT_DIR):
        if candidate.is_dir():
            return candidate
    with os.scandir(manual_dir) as entries:
        found = [Path(e.path) / REAL_EDIT_DIR for e in entries if e.is_dir()]
    found = [p for p in found if p.is_dir()]
    if len(found) == 1:
        return found[0]
    raise ManualDataError(f"Folder {REAL_EDIT_DIR}/ not found next to {json_path} or in {manual_dir}.")


def _real_edit_image(folder: Path, image_id: str) -> Path:
    path = validation.resolve_inside(folder, image_id)
    if path.is_file():
        return path
    if not Path(image_id).suffix:
        for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".PNG"):
            candidate = validation.resolve_inside(folder, image_id + suffix)
            if candidate.is_file():
                return candidate
    raise Skip(validation.MISSING_IMAGE, f"{REAL_EDIT_DIR}/{image_id}")


def real_edit_examples(
    manual_dir: str | os.PathLike, summary: BuildSummary, expected_images: int | None = REAL_EDIT_IMAGES
) -> Iterator[tuple[str, Example]]:
    """Real-Edit examples: key `<image_id>/<i>`, image bytes, instruction and edit type.

    After the last example, unless `expected_images` is None, the data must hold exactly `expected_images`
    photos with one instruction of each of the 7 edit types and nothing skipped (the benchmark's 80 x 7 =
    560 edits); otherwise `ManualDataError` names what differs (`check_real_edit_layout`).
    """
    manual_dir = Path(manual_dir)
    json_path = sources.find_file(manual_dir, REAL_EDIT_FILE)
    entries, duplicates = validation.load_json_with_duplicates(json_path)
    if not isinstance(entries, dict):
        raise ManualDataError(f"{json_path} must hold a JSON object mapping image names to instruction lists")
    image_ids = list(entries)
    kept_types: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {}
    unexpected_types: dict[str, list[str]] = {}

    def skip(image_id: str, key: str, error: Skip) -> None:
        summary.skip(key, error)
        reasons.setdefault(image_id, []).append(error.reason)

    for image_id in duplicates:
        skip(image_id, image_id, Skip(validation.DUPLICATE_KEY, "several values in the JSON file"))
        entries.pop(image_id, None)
    folder = _find_real_edit_dir(manual_dir, json_path)
    summary.facts["instructions_file"] = _relative(json_path, manual_dir)
    summary.facts["images_dir"] = _relative(folder, manual_dir)
    summary.facts["images"] = len(entries)
    unexpected_counts = {}
    for image_id, instructions in entries.items():
        if isinstance(instructions, str):
            instructions = [instructions]
        if not isinstance(instructions, list) or not instructions:
            skip(image_id, image_id, Skip(validation.BAD_INSTRUCTION, "not a list of instruction strings"))
            continue
        if len(instructions) != REAL_EDIT_INSTRUCTIONS_PER_IMAGE:
            unexpected_counts[image_id] = len(instructions)
        image: bytes | Skip | None = None
        for i, text in enumerate(instructions):
            key = f"{image_id}/{i}"
            try:
                edit_type, instruction = parse_real_edit_instruction(text)
                if image is None:
                    try:
                        path = _real_edit_image(folder, image_id)
                        image = images.read_checked_image(path, f"{REAL_EDIT_DIR}/{path.name}")
                    except Skip as e:
                        image = e
                if isinstance(image, Skip):
                    raise image
            except Skip as e:
                skip(image_id, key, e)
                if e.reason == validation.UNKNOWN_EDIT_TYPE:
                    unexpected_types.setdefault(_type_head(text), []).append(key)
                continue
            summary.keep()
            kept_types.setdefault(image_id, []).append(edit_type)
            yield (
                key,
                {"image_id": image_id, "image": image, "instruction": instruction, "edit_type": edit_type},
            )
    summary.facts["images_with_unexpected_instruction_count"] = unexpected_counts
    if expected_images is not None:
        summary.facts["expected"] = f"{expected_images} images x {len(REAL_EDIT_TYPES)} edit types"
        check_real_edit_layout(
            json_path, image_ids, kept_types, reasons, unexpected_types, summary, expected_images
        )


def _type_head(text: Any) -> str:
    """The would-be edit type of an instruction whose type is not one of the 7 (for the layout error)."""
    match = _TYPE_PREFIX.match(text) if isinstance(text, str) else None
    return match["head"].strip() if match else repr(text)[:40]


def check_real_edit_layout(
    json_path: Path,
    image_ids: list[str],
    kept_types: dict[str, list[str]],
    reasons: dict[str, list[str]],
    unexpected_types: dict[str, list[str]],
    summary: BuildSummary,
    expected_images: int = REAL_EDIT_IMAGES,
) -> None:
    """Raises `ManualDataError` unless the kept edits are `expected_images` photos x the 7 edit types.

    `image_ids`: every image name of the JSON; `kept_types`: the edit types kept per image; `reasons`: the
    skip reasons per image; `unexpected_types`: edit type -> keys of instructions with that unknown type.
    The one-line message names the number of images, the images missing (or repeating) edit types with
    why their edits were skipped, the unexpected edit types, and the skip counts.
    """
    expected_edits = expected_images * len(REAL_EDIT_TYPES)
    problems = []
    if len(image_ids) != expected_images:
        problems.append(f"{len(image_ids)} images, not {expected_images}")
    image_problems = []
    for image_id in image_ids:
        types = kept_types.get(image_id, [])
        missing = [t for t in REAL_EDIT_TYPES if t not in types]
        repeated = [t for t in REAL_EDIT_TYPES if types.count(t) > 1]
        issues = []
        if len(missing) == len(REAL_EDIT_TYPES):
            issues.append("misses every edit type")
        elif missing:
            issues.append(f"misses {', '.join(missing)}")
        if repeated:
            issues.append(f"has {', '.join(repeated)} more than once")
        if issues:
            why = sorted(set(reasons.get(image_id, [])))
            image_problems.append(
                f"{image_id} {' and '.join(issues)}" + (f" ({', '.join(why)})" if why else "")
            )
    if image_problems:
        more = len(image_problems) - MAX_LISTED
        problems.append(
            "; ".join(image_problems[:MAX_LISTED]) + (f"; ... and {more} more images" if more > 0 else "")
        )
    if unexpected_types:
        listed = [
            f"{name!r} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for name, keys in unexpected_types.items()
        ]
        problems.append(f"unexpected edit types {', '.join(listed)}")
    if summary.total_skipped:
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
        problems.append(f"skipped {counts}")
    if problems:
        raise ManualDataError(
            f"{json_path}: Real-Edit is {expected_images} images x {len(REAL_EDIT_TYPES)} edit types = "
            f"{expected_edits} edits, but this data gives {summary.kept} edits: {'; '.join(problems)}"
        )
