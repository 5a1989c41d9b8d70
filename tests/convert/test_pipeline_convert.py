"""Whole-pipeline import/export: diffusers folder -> Flax model directory -> diffusers folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fixtures_pipeline import save_tiny_ip2p_pipeline
from PIL import Image
from safetensors.numpy import load_file, save_file

from rewardedit_jax import convert
from rewardedit_jax.convert.cli import main
from rewardedit_jax.convert.parity import compare, run_flax_unet, run_torch_unet, unet_inputs


@pytest.fixture(scope="module")
def stock_pipe(tmp_path_factory):
    return save_tiny_ip2p_pipeline(tmp_path_factory.mktemp("stock") / "pipe", seed=21)


@pytest.fixture(scope="module")
def reward_pipe(tmp_path_factory):
    return save_tiny_ip2p_pipeline(tmp_path_factory.mktemp("reward") / "pipe", reward=True, seed=22)


def _image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _edit(pipe, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = pipe(
        "make it red", image=_image(), num_inference_steps=3, generator=generator, output_type="np"
    ).images
    return np.asarray(out)


def test_ip2p_pipeline_round_trip_edits_identically_in_diffusers(stock_pipe, tmp_path):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    assert main(["import", str(stock_pipe), str(tmp_path / "flax")]) == 0
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (tmp_path / "out" / name).exists(), name
    original = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(stock_pipe))
    exported = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(tmp_path / "out"))
    a, b = _edit(original, seed=3), _edit(exported, seed=3)
    assert a.shape == (1, 32, 32, 3) and a.std() > 0
    np.testing.assert_array_equal(a, b)


def test_load_pipeline_from_diffusers_folder_and_flax_dir(stock_pipe, tmp_path):
    assert main(["import", str(stock_pipe), str(tmp_path / "flax")]) == 0
    for path in (stock_pipe, tmp_path / "flax"):
        pipe = convert.load_pipeline(path)
        assert pipe.noise_schedule.num_train_timesteps == 1000
        assert pipe.scheduler_config["_class_name"] == "EulerAncestralDiscreteScheduler"
        np.testing.assert_allclose(pipe.noise_schedule.betas[[0, -1]], [0.00085, 0.012], rtol=1e-9)
        ids = pipe.tokenizer(["make it red"])
        assert ids.shape == (1, 77)
        hidden, pooled = pipe.text_encoder(ids)
        assert hidden.shape == (1, 77, 32) and pooled.shape == (1, 32)
        assert pipe.unet.config.in_channels == 8 and pipe.vae.scaling_factor == pytest.approx(0.18215)


def test_reward_export_runs_in_torch_compat_pipeline_and_matches_flax(reward_pipe, tmp_path):
    from rewardedit_jax.torch_compat import RewardEditPipeline

    assert main(["import", str(reward_pipe), str(tmp_path / "flax")]) == 0
    assert main(["export", str(tmp_path / "flax"), str(tmp_path / "out")]) == 0
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["unet"] == ["rewardedit_jax.torch_compat", "RewardUNet2DConditionModel"]
    pipe = RewardEditPipeline.from_pretrained(str(tmp_path / "out"))
    best = _edit(pipe, seed=4)
    worst = np.asarray(
        pipe(
            "make it red",
            _image(),
            reward_scores=(1, 1, 1),
            feedback="wrong colour; background changed; noisy",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(4),
            output_type="np",
        ).images
    )
    assert best.shape == (1, 32, 32, 3) and np.abs(best - worst).max() > 1e-4
    flax_unet = convert.load_unet(tmp_path / "flax")
    inputs = unet_inputs(flax_unet.config, seed=5)
    result = compare("unet", "eps", run_flax_unet(flax_unet, inputs), run_torch_unet(pipe.unet, inputs))
    assert result.rel <= 1e-4, result


def test_check_covers_every_component_and_fails_on_a_perturbed_vae(stock_pipe, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(stock_pipe, src)
    assert main(["import", str(src), str(tmp_path / "flax")]) == 0
    capsys.readouterr()
    assert main(["check", str(src), "--against", str(tmp_path / "flax")]) == 0
    out = capsys.readouterr().out
    for line in ("unet", "encode.mean", "encode.logvar", "decode", "last_hidden", "pooled"):
        assert line in out
    weights = src / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    key = "decoder.conv_out.weight"
    state[key] = state[key] * 1.05
    save_file(state, str(weights))
    assert main(["check", str(src), "--against", str(tmp_path / "flax")]) == 1
    out = capsys.readouterr().out
    assert "vae           decode" in out and "FAIL" in out.split("vae           decode")[1].splitlines()[0]


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


def test_missing_component_is_named(stock_pipe, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(stock_pipe, src)
    shutil.rmtree(src / "vae")
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    assert "'vae'" in _one_line_error(capsys)
    assert not (tmp_path / "flax").exists()


def test_mismatched_text_encoder_shapes_are_named(stock_pipe, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(stock_pipe, src)
    config = json.loads((src / "text_encoder" / "config.json").read_text())
    config["intermediate_size"] = 40
    (src / "text_encoder" / "config.json").write_text(json.dumps(config))
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert "text_encoder" in line and "shape" in line
    assert not (tmp_path / "flax").exists()


def test_unknown_scheduler_type_is_named(stock_pipe, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(stock_pipe, src)
    config = json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    config["_class_name"] = "MysteryScheduler"
    (src / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    assert main(["import", str(src), str(tmp_path / "flax")]) == 2
    line = _one_line_error(capsys)
    assert "scheduler" in line and "MysteryScheduler" in line
    assert not (tmp_path / "flax").exists()
    with pytest.raises(convert.ConversionError, match="MysteryScheduler"):
        convert.load_pipeline(src)
