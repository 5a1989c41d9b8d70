"""Small fake manual directories for the builders' tests, the benchmark, and trying the builders.

`write_*_dummy_data(root)` writes the `dummy_data/` of each builder in `tfds_builders/` (a handful of 32x32
JPEGs plus deliberately bad entries; for `real_edit`, whose build checks the benchmark's layout, 80 complete
16x16 photos, with the bad entries in `write_real_edit_defective_data`) and returns the build summary it must
produce. Regenerate the committed fixtures with

    python -m rewardedit_jax.data.fixtures tfds_builders

The helpers (`write_ip2p_folder`, `write_parquet_shard`, `reward_entry`, `photo_like_image`) also build
other layouts in tests and the benchmark's 512x512 JPEG data.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rewardedit_jax.data import manual

GOOD_TEXTS = (
    "There are no noticeable negative aspects.",
    "The background texture changed slightly.",
    "Slight blur around the edges.",
)


def photo_like_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3) with smooth colour fields, edges and texture, compressing like a photo."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    image = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    )
    image = image.astype(np.float32)
    y, x = np.mgrid[0:size, 0:size] / size
    for _ in range(3):  # A few hard-edged discs.
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0, 255, size=3)
    texture = rng.normal(0, 1, size=(size // 4, size // 4, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((4, 4, 1), np.float32))[:size, :size]
    image += 12 * texture + rng.normal(0, 4, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def small_jpeg(seed: int, size: int = 32) -> bytes:
    return jpeg_bytes(photo_like_image(np.random.default_rng(seed), size))


def corrupt(data: bytes) -> bytes:
    """A JPEG cut in the middle (decoding it fails)."""
    return data[: len(data) // 2]


def reward_entry(scores: Sequence[Any], texts: Sequence[str] = GOOD_TEXTS) -> list[dict[str, Any]]:
    """A RewardEdit20K value: one dict per perspective with `Score` and `Negative Prompt`."""
    return [{"Score": s, "Negative Prompt": t} for s, t in zip(scores, texts)]


def write_ip2p_folder(
    root: str | os.PathLike,
    folder: str,
    seeds: Sequence[str],
    *,
    instruction: str | None = "make it snowy",
    size: int = 32,
    corrupt_edited: Sequence[str] = (),
    missing: Sequence[str] = (),
    image_bytes=None,
) -> Path:
    """`root/folder/prompt.json` + `{seed}_0.jpg` / `{seed}_1.jpg` per seed.

    `corrupt_edited`: seeds whose edited JPEG is truncated; `missing`: files (`"{seed}_1"`) not written;
    `image_bytes(seed, side) -> bytes` overrides the images (default: small random JPEGs).
    """
    path = Path(root) / folder
    path.mkdir(parents=True, exist_ok=True)
    prompt = {"input": "a photo", "output": "a photo, edited", "url": "https://example.com/x.jpg"}
    if instruction is not None:
        prompt["edit"] = instruction
    (path / "prompt.json").write_text(json.dumps(prompt))
    for seed in seeds:
        for side in ("0", "1"):
            if f"{seed}_{side}" in missing:
                continue
            if image_bytes is not None:
                data = image_bytes(seed, side)
            else:
                data = small_jpeg(int(seed) * 2 + int(side), size)
            if side == "1" and seed in corrupt_edited:
                data = corrupt(data)
            (path / f"{seed}_{side}.jpg").write_bytes(data)
    return path


def write_parquet_shard(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """An HF-layout parquet shard; each row: `edit_prompt`, `source`/`edited` bytes, optional `path`s."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "original_prompt": pa.array([r.get("original_prompt", "a photo") for r in rows], pa.string()),
            "original_image": pa.array(
                [{"bytes": r.get("source"), "path": r.get("source_path")} for r in rows], image_type
            ),
            "edit_prompt": pa.array([r.get("edit_prompt") for r in rows], pa.string()),
            "edited_prompt": pa.array([r.get("edited_prompt", "a photo, edited") for r in rows], pa.string()),
            "edited_image": pa.array(
                [{"bytes": r.get("edited"), "path": r.get("edited_path")} for r in rows], image_type
            ),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2)
    return path


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def write_reward_edit_dummy_data(root: str | os.PathLike) -> dict[str, Any]:
    """RewardEdit_20K.json next to a subfolder of InstructPix2Pix folders, with one bad entry per reason."""
    root = Path(root)
    images = root / "clip-filtered-dataset"
    rewards = {}
    for i in range(1, 5):  # Good.
        write_ip2p_folder(images, f"000000{i}", [str(10 + i)], instruction=f"edit number {i}")
        rewards[f"000000{i}"] = reward_entry([4.5, 3, "2.5"])
    write_ip2p_folder(images, "0000005", ["15"], missing=["15_1"])
    rewards["0000005"] = reward_entry([5, 5, 5])
    write_ip2p_folder(images, "0000006", ["16"], corrupt_edited=["16"])
    rewards["0000006"] = reward_entry([5, 5, 5])
    write_ip2p_folder(images, "0000007", ["17"])
    rewards["0000007"] = reward_entry(["abc", 5, 5])
    write_ip2p_folder(images, "0000008", ["18"])
    rewards["0000008"] = reward_entry([5, 7, 5])
    write_ip2p_folder(images, "0000009", ["19"])
    rewards["0000009"] = reward_entry([5, 5])
    write_ip2p_folder(images, "0000010", ["20", "21"])  # Two pairs: ambiguous.
    rewards["0000010"] = reward_entry([1, 2, 3])
    rewards["../0000001"] = reward_entry([5, 5, 5])
    rewards["0000099"] = reward_entry([5, 5, 5])  # No such folder.
    _write_json(root / manual.REWARDS_FILE, rewards)
    return {
        "kept": 4,
        "skipped": {
            "ambiguous_pairs": 1,
            "missing_image": 1,
            "score_not_numeric": 1,
            "score_out_of_range": 1,
            "unmatched_key": 1,
            "unreadable_image": 1,
            "unsafe_key": 1,
            "wrong_perspective_count": 1,
        },
    }


def write_instruct_pix2pix_dummy_data(root: str | os.PathLike) -> dict[str, Any]:
    """InstructPix2Pix folders directly in the manual directory: 2 + 1 good pairs and 3 bad ones."""
    root = Path(root)
    write_ip2p_folder(root, "0000001", ["11", "12"], instruction="make it night")
    write_ip2p_folder(root, "0000002", ["21"], instruction="add a hat")
    write_ip2p_folder(root, "0000003", ["31"], corrupt_edited=["31"])
    write_ip2p_folder(root, "0000004", ["41"], instruction=None)
    write_ip2p_folder(root, "0000005", ["51"], missing=["51_0"])
    _write_json(root / "seeds.json", [[f"000000{i}", s] for i, s in enumerate([["11", "12"], ["21"]], 1)])
    return {"kept": 3, "skipped": {"missing_image": 1, "missing_instruction": 1, "unreadable_image": 1}}


def real_edit_instructions(types: Sequence[str] = manual.REAL_EDIT_TYPES) -> list[str]:
    return [f"{t}. Instruction: {t.lower()} edit of the photo" for t in types]


def write_real_edit_dummy_data(
    root: str | os.PathLike, images: int = manual.REAL_EDIT_IMAGES
) -> dict[str, Any]:
    """real_edit_instruct.json + Real-Edit/ laid out as the benchmark: `images` 16x16 photos x 7 edit types.

    The `real_edit` build requires the benchmark's 80 x 7 = 560 edits, so its dummy data is complete; the
    skip reasons are exercised by `write_real_edit_defective_data`.
    """
    root = Path(root)
    folder = root / manual.REAL_EDIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    instructions = {}
    for i in range(images):
        (folder / f"{i}.jpg").write_bytes(small_jpeg(i + 1, size=16))
        instructions[f"{i}.jpg"] = real_edit_instructions()
    _write_json(root / manual.REAL_EDIT_FILE, instructions)
    return {"kept": images * len(manual.REAL_EDIT_TYPES), "skipped": {}}


def write_real_edit_defective_data(root: str | os.PathLike) -> dict[str, Any]:
    """real_edit_instruct.json + Real-Edit/: 2 good photos (one with an unknown type), 1 corrupt, 1 absent."""
    root = Path(root)
    folder = root / manual.REAL_EDIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0.jpg").write_bytes(small_jpeg(1))
    (folder / "1.jpg").write_bytes(small_jpeg(2))
    (folder / "2.jpg").write_bytes(corrupt(small_jpeg(3)))
    odd = real_edit_instructions()
    odd[3] = "Lighting. Instruction: make it brighter"
    instructions = {
        "0.jpg": real_edit_instructions(),
        "1.jpg": odd,
        "2.jpg": real_edit_instructions()[:2],
        "3.jpg": real_edit_instructions()[:1],
    }
    _write_json(root / manual.REAL_EDIT_FILE, instructions)
    return {"kept": 13, "skipped": {"missing_image": 1, "unknown_edit_type": 1, "unreadable_image": 2}}


DUMMY_DATA = {
    "reward_edit": write_reward_edit_dummy_data,
    "instruct_pix2pix": write_instruct_pix2pix_dummy_data,
    "real_edit": write_real_edit_dummy_data,
}


def main(argv: Sequence[str]) -> None:
    builders_dir = Path(argv[0] if argv else "tfds_builders")
    for name, write in DUMMY_DATA.items():
        target = builders_dir / name / "dummy_data"
        if target.exists():
            raise SystemExit(f"{target} exists; remove it first")
        print(f"{target}: {write(target)}")


if __name__ == "__main__":
    main(sys.argv[1:])
