"""The offline demo end to end, shortened (a few steps on synthetic_edit/tiny): every stage runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_quick_demo_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo_out"
    proc = subprocess.run(
        [sys.executable, "-m", "rewardedit_jax.demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"baseline", "reward_555", "reward_111"}
    for model in results["summary"].values():
        for key in ("following_score", "preserving_score", "quality_score", "l1"):
            assert model[key]["mean"] >= 0
    for name in ("report.html", "grid.png", "pytorch_edit.png"):
        assert (out / name).is_file(), name
    assert "following score" in proc.stdout  # the comparison table is printed
    assert (out / "export_reward" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
