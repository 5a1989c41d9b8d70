"""diffusers <-> Flax U-Net conversion: round trips, the convert CLI, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fixtures_unet import REWARD_LIKE, SD1_LIKE, save_torch_unet
from safetensors.numpy import load_file, save_file

from rewardedit_jax import convert
from rewardedit_jax.convert.cli import main
from rewardedit_jax.convert.parity import compare, run_flax_unet, run_torch_unet, unet_inputs


def _state(folder):
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def _assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    last = err[-1]
    assert last.startswith("error: ")
    return last


@pytest.fixture(scope="module")
def stock_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stock") / "unet"
    save_torch_unet(path, SD1_LIKE, seed=11)
    return path


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("reward") / "unet"
    save_torch_unet(path, REWARD_LIKE, reward=True, seed=12)
    return path


def test_stock_round_trip_gives_identical_state_dict_and_loads_in_diffusers(stock_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    assert main(["import", str(stock_dir), str(tmp_path / "flax")]) == 0
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    _assert_same_state(_state(stock_dir), _state(tmp_path / "out"))
    _, info = UNet2DConditionModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_reward_round_trip_loads_in_reward_unet(reward_dir, tmp_path):
    from rewardedit_jax.torch_compat import RewardUNet2DConditionModel

    assert main(["import", str(reward_dir), str(tmp_path / "flax")]) == 0
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    _assert_same_state(_state(reward_dir), _state(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["_class_name"] == "RewardUNet2DConditionModel"
    _, info = RewardUNet2DConditionModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_official_reward_layout_is_recognized_by_its_weights(reward_dir, tmp_path):
    """Official checkpoints carry a stock-looking config; the reward modules are found by key."""
    import shutil

    from rewardedit_jax.torch_compat import RewardUNet2DConditionModel

    official = tmp_path / "official"
    shutil.copytree(reward_dir, official)
    config = json.loads((official / "config.json").read_text())
    for key in ("reward_score_embed_dim", "reward_num_heads"):
        config.pop(key)
    config["_class_name"] = "UNet2DConditionModel"
    (official / "config.json").write_text(json.dumps(config))
    unet = convert.load_unet(official)
    assert unet.has_reward
    torch_model = RewardUNet2DConditionModel.from_pretrained(str(official)).eval()
    inputs = unet_inputs(unet.config, seed=1)
    assert (
        compare("unet", "eps", run_flax_unet(unet, inputs), run_torch_unet(torch_model, inputs)).rel <= 1e-4
    )


def test_load_unet_accepts_unet_folder_pipeline_folder_and_flax_dir(stock_dir, tmp_path):
    import shutil

    pipeline = tmp_path / "pipe"
    shutil.copytree(stock_dir, pipeline / "unet")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert main(["import", str(pipeline), str(tmp_path / "flax")]) == 0
    inputs = unet_inputs(convert.load_unet(stock_dir).config, seed=2)
    outs = [run_flax_unet(convert.load_unet(p), inputs) for p in (stock_dir, pipeline, tmp_path / "flax")]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # A pipeline import exports as a pipeline folder (unet/ inside).
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    _assert_same_state(_state(stock_dir), _state(tmp_path / "out" / "unet"))


def test_bin_and_sharded_weights_load_like_safetensors(tmp_path):
    model = save_torch_unet(tmp_path / "single", SD1_LIKE, seed=13)
    model.save_pretrained(str(tmp_path / "bin"), safe_serialization=False)
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="200KB")
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    assert (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    inputs = unet_inputs(convert.load_unet(tmp_path / "single").config, seed=3)
    ref = run_flax_unet(convert.load_unet(tmp_path / "single"), inputs)
    np.testing.assert_array_equal(ref, run_flax_unet(convert.load_unet(tmp_path / "bin"), inputs))
    np.testing.assert_array_equal(ref, run_flax_unet(convert.load_unet(tmp_path / "sharded"), inputs))


def test_check_passes_then_fails_on_perturbed_weights(reward_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(reward_dir, src)
    assert main(["import", str(src), str(tmp_path / "flax")]) == 0
    assert main(["check", str(src)]) == 0
    assert main(["check", str(src), "--against", str(tmp_path / "flax")]) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "rel=" in out and "within tolerance" in out
    state = _state(src)
    noise = np.random.default_rng(0).standard_normal(state["ca.attention.self.value.weight"].shape)
    state["ca.attention.self.value.weight"] = state["ca.attention.self.value.weight"] + 0.01 * noise.astype(
        np.float32
    )
    save_file(state, str(src / "diffusion_pytorch_model.safetensors"))
    assert main(["check", str(src), "--against", str(tmp_path / "flax")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_stage1_expansion_to_8_channels_zero_fills_the_new_inputs(stock_dir, tmp_path):
    assert main(["import", str(stock_dir), str(tmp_path / "flax"), "--in-channels", "8"]) == 0
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    old, new = _state(stock_dir)["conv_in.weight"], _state(tmp_path / "out")["conv_in.weight"]
    assert new.shape == (old.shape[0], 8) + old.shape[2:]
    np.testing.assert_array_equal(new[:, :4], old)
    assert not new[:, 4:].any()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["in_channels"] == 8
    four, eight = convert.load_unet(stock_dir), convert.load_unet(tmp_path / "flax")
    inputs = unet_inputs(four.config, seed=4)
    wide = dict(inputs, sample=np.concatenate([inputs["sample"], np.ones_like(inputs["sample"])], axis=-1))
    np.testing.assert_allclose(run_flax_unet(eight, wide), run_flax_unet(four, inputs), rtol=1e-5, atol=1e-5)


def test_add_reward_conditioning_keeps_the_base_and_exports_as_reward(stock_dir, tmp_path):
    from rewardedit_jax.convert.unet import save_diffusers_unet
    from rewardedit_jax.torch_compat import RewardUNet2DConditionModel

    base = convert.load_unet(stock_dir)
    base = convert.expand_input_channels(base, 8)
    reward = convert.add_reward_conditioning(base, seed=3)
    assert reward.has_reward and not base.has_reward
    np.testing.assert_array_equal(
        np.asarray(reward.conv_in.kernel.get_value()), np.asarray(base.conv_in.kernel.get_value())
    )
    save_diffusers_unet(reward, tmp_path / "out", None)
    torch_model, info = RewardUNet2DConditionModel.from_pretrained(
        str(tmp_path / "out"), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = unet_inputs(reward.config, seed=5)
    result = compare("unet", "eps", run_flax_unet(reward, inputs), run_torch_unet(torch_model.eval(), inputs))
    assert result.rel <= 1e-4


# --- bad input: one-line errors naming the input, and no partial output --------------------------------


def _no_partial_output(tmp_path, name="flax"):
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.tmp")]


def test_missing_folder(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope"), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert str(tmp_path / "nope") in line and "no such model folder" in line
    _no_partial_output(tmp_path)


def test_unsupported_config_key(stock_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(stock_dir, src)
    config = json.loads((src / "config.json").read_text())
    config["class_embed_type"] = "timestep"
    (src / "config.json").write_text(json.dumps(config))
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert "config.json" in line and "class_embed_type" in line
    _no_partial_output(tmp_path)


def test_shape_mismatch(stock_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(stock_dir, src)
    config = json.loads((src / "config.json").read_text())
    config["cross_attention_dim"] = 32  # the weights were made for 24
    (src / "config.json").write_text(json.dumps(config))
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert str(src) in line and "attn2.to_k.weight" in line and "shape" in line
    _no_partial_output(tmp_path)


def test_truncated_weights_file(stock_dir, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(stock_dir, src)
    weights = src / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert str(weights) in line
    _no_partial_output(tmp_path)


def test_existing_output_is_not_touched(stock_dir, tmp_path, capsys):
    (tmp_path / "flax").mkdir()
    (tmp_path / "flax" / "keep.txt").write_text("mine")
    assert main(["import", str(stock_dir), str(tmp_path / "flax")]) == 2
    assert "already exists" in _one_line_error(capsys)
    assert (tmp_path / "flax" / "keep.txt").read_text() == "mine"


def test_module_entry_point_runs(stock_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rewardedit_jax.convert", "import", str(stock_dir), str(tmp_path / "flax")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "flax" / "rewardedit_model.json").is_file()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewardedit_jax.convert",
            "import",
            str(tmp_path / "missing"),
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
