"""A tiny `real_edit` TFDS dataset for evaluation tests: a wide photo (150x70, 1 edit), a square one
(70x70, 2 edits), so that two fitted sizes are generated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def build_tiny_real_edit(root: Path) -> tuple[Path, Path]:
    """Write the manual data under ``root/manual`` and build it into ``root/data``: (data_dir, manual)."""
    import tensorflow_datasets as tfds

    from rewardedit_jax.tfds_builders.real_edit import real_edit_dataset_builder

    manual = root / "manual"
    (manual / "Real-Edit").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 150, 3), dtype=np.uint8)).save(
        manual / "Real-Edit" / "wide.png"
    )
    Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(
        manual / "Real-Edit" / "square.png"
    )
    instructions = {
        "wide.png": ["Local. Instruction: make the cat red"],
        "square.png": ["Style. Instruction: make it a painting", "Global. Instruction: make it night"],
    }
    (manual / "real_edit_instruct.json").write_text(json.dumps(instructions))
    builder = real_edit_dataset_builder.Builder(data_dir=root / "data", file_format="array_record")
    with pytest.MonkeyPatch.context() as patch:  # 3 edits, not the benchmark's 80 photos x 7 edit types
        patch.setattr(real_edit_dataset_builder.Builder, "EXPECTED_IMAGES", None)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return root / "data", manual
