"""The repository root on sys.path: the checkout's builder folders import as `tfds_builders.<name>...`."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
