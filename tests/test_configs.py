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
    assert sd15_ip2p.SD15_UNET is sd15.SD15_UNET  # what the benchmarks import
    assert sd15_reward.get_config("v5e-16").mesh.fsdp == 16
    assert sd15_reward.get_config().model.unet.to_dict() == sd15.SD15_UNET
