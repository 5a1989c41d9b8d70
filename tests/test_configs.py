"""The config files in configs/ load from a copy anywhere: they import only the package, never each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")

LOAD = """
import importlib.util, json, sys
from rewardedit_jax.training import trainer
names = {}
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("copied_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    trainer._check_keys(config, trainer._default_config(), "config")
    names[path.rsplit("/", 1)[-1]] = config.data.name
try:
    import configs
    names["configs importable"] = True
except ImportError:
    names["configs importable"] = False
print(json.dumps(names))
"""


def test_copies_of_the_config_files_load_without_the_checkout_on_sys_path(tmp_path):
    # Only the package is importable (through a link to it), not the checkout's configs/.
    root = tmp_path / "site"
    root.mkdir()
    (root / "rewardedit_jax").symlink_to(REPO / "rewardedit_jax")
    work = tmp_path / "work"
    work.mkdir()
    copies = []
    for path in CONFIGS:
        copies.append(work / f"copy_of_{path.name}")
        copies[-1].write_text(path.read_text())
    env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, *map(str, copies)], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = json.loads(proc.stdout.splitlines()[-1])
    assert names.pop("configs importable") is False
    assert names == {
        "copy_of_default.py": "reward_edit",
        "copy_of_demo.py": "synthetic_edit/16px",
        "copy_of_sd15_ip2p.py": "instruct_pix2pix",
        "copy_of_sd15_reward.py": "reward_edit",
        "copy_of_test_tiny.py": "synthetic_edit/tiny",
    }


def test_the_checkout_configs_are_the_packaged_ones():
    from configs import default, demo, sd15_ip2p, sd15_reward
    from rewardedit_jax.configs import default as packaged_default
    from rewardedit_jax.configs import demo as packaged_demo
    from rewardedit_jax.configs import sd15

    assert default.get_config() == packaged_default.get_config()
    assert demo.get_config() == packaged_demo.get_config()
    assert sd15_reward.get_config("v5e-16").mesh.fsdp == 16
    for stage in (sd15_ip2p, sd15_reward):
        assert stage.get_config().model.unet.to_dict() == sd15.SD15_UNET  # what the benchmarks build
    # The two stages share the official recipe and differ in their data and the reward modules only.
    stage1, stage2 = sd15_ip2p.get_config().to_dict(), sd15_reward.get_config().to_dict()
    assert {k for k in stage1 if stage1[k] != stage2[k]} == {"data", "reward"}
    assert (stage1["data"]["name"], stage2["data"]["name"]) == ("instruct_pix2pix", "reward_edit")
    assert (stage1["reward"]["enabled"], stage2["reward"]["enabled"]) == (False, True)


def test_component_configs_mirror_the_down_path_and_refuse_a_level_count_mismatch():
    import pytest

    from rewardedit_jax.configs import sd15
    from rewardedit_jax.configs.components import tiny_text_config, unet_config

    # SD 1.5's U-Net as its config.json writes it: attention at the three finest levels.
    assert sd15.SD15_UNET["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert sd15.SD15_UNET["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert sd15.SD15_VAE["down_block_types"] == ["DownEncoderBlock2D"] * 4
    assert sd15.SD15_TEXT_ENCODER["intermediate_size"] == 3072
    assert tiny_text_config(100)["bos_token_id"] == 98 and tiny_text_config(100)["pad_token_id"] == 99
    with pytest.raises(
        ValueError, match=r"attention has 1 entries for 2 levels \(block_out_channels \[32, 64\]\)"
    ):
        unet_config([32, 64], [True], cross_attention_dim=32, attention_head_dim=4)
