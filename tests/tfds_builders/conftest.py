"""The checkout's root, whose builder folders import as `tfds_builders.<name>...` (pytest's pythonpath)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
