"""VAE and text encoder conversion: lossless round trips, Flax model directories, and bad folders."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures_sd import save_tiny_text_encoder, save_tiny_vae
from flax import nnx
from safetensors.numpy import load_file, save_file

from rewardedit_jax.convert.clip_text import (
    load_diffusers_text_encoder,
    load_flax_text_encoder,
    save_diffusers_text_encoder,
    save_flax_text_encoder,
)
from rewardedit_jax.convert.model_dir import numpy_params
from rewardedit_jax.convert.vae import load_diffusers_vae, load_flax_vae, save_diffusers_vae, save_flax_vae
from rewardedit_jax.convert.weights import ConversionError

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
TE_WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    save_tiny_vae(folder, seed=1)
    return folder


@pytest.fixture(scope="module")
def te_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_encoder")
    save_tiny_text_encoder(folder, "gelu", seed=2)
    return folder


def copy_folder(src, dst):
    shutil.copytree(src, dst)
    return dst


def without_path(config) -> dict:
    return {k: v for k, v in dict(config).items() if k != "_name_or_path"}


def assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


@nnx.jit
def vae_outputs(model, images):
    mean, logvar = model.encode(images)
    return mean, logvar, model.decode(mean)


@nnx.jit
def text_outputs(model, ids):
    return model(ids)


# --- lossless round trips ------------------------------------------------------------------------------


def test_vae_export_reproduces_the_diffusers_state_dict_bitwise(vae_dir, tmp_path):
    from diffusers import AutoencoderKL

    model, config = load_diffusers_vae(vae_dir)
    save_diffusers_vae(model, tmp_path / "out", config)
    assert_same_tensors(load_file(tmp_path / "out" / VAE_WEIGHTS), load_file(vae_dir / VAE_WEIGHTS))
    reloaded, info = AutoencoderKL.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert without_path(reloaded.config) == without_path(AutoencoderKL.from_pretrained(str(vae_dir)).config)


def test_text_encoder_export_reproduces_the_transformers_state_dict_bitwise(te_dir, tmp_path):
    from transformers import CLIPTextModel

    model, config = load_diffusers_text_encoder(te_dir)
    save_diffusers_text_encoder(model, tmp_path / "out", config)
    exported = load_file(tmp_path / "out" / TE_WEIGHTS)
    # transformers 5 saves unprefixed keys; exports use the classic ``text_model.`` layout.
    source = {f"text_model.{k}": v for k, v in load_file(te_dir / TE_WEIGHTS).items()}
    assert_same_tensors(exported, source)
    reloaded, info = CLIPTextModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    original = CLIPTextModel.from_pretrained(str(te_dir))
    assert without_path(reloaded.config.to_dict()) == without_path(original.config.to_dict())
    reference = original.state_dict()
    assert sorted(reloaded.state_dict()) == sorted(reference)
    assert all(torch.equal(v, reference[k]) for k, v in reloaded.state_dict().items())


def test_text_encoder_in_the_classic_prefixed_layout_round_trips_to_identical_files(te_dir, tmp_path):
    src = copy_folder(te_dir, tmp_path / "prefixed")
    tensors = {f"text_model.{k}": v for k, v in load_file(te_dir / TE_WEIGHTS).items()}
    save_file(tensors, str(src / TE_WEIGHTS), metadata={"format": "pt"})
    model, config = load_diffusers_text_encoder(src)
    save_diffusers_text_encoder(model, tmp_path / "out", config)
    assert_same_tensors(load_file(tmp_path / "out" / TE_WEIGHTS), tensors)


def test_legacy_pytorch_bin_with_position_ids_buffer_loads(te_dir, tmp_path):
    src = copy_folder(te_dir, tmp_path / "bin")
    tensors = load_file(src / TE_WEIGHTS)
    (src / TE_WEIGHTS).unlink()
    state = {f"text_model.{k}": torch.from_numpy(v) for k, v in tensors.items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(state, src / "pytorch_model.bin")
    model, _ = load_diffusers_text_encoder(src)
    reference, _ = load_diffusers_text_encoder(te_dir)
    params, expected = numpy_params(model), numpy_params(reference)
    assert sorted(params) == sorted(expected)
    assert all(np.array_equal(params[k], expected[k]) for k in params)


def test_vae_with_deprecated_attention_names_loads_like_the_current_layout(vae_dir, tmp_path):
    src = copy_folder(vae_dir, tmp_path / "legacy")
    tensors = load_file(vae_dir / VAE_WEIGHTS)
    renamed = {}
    for key, value in tensors.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        renamed[key] = value
    assert any(".proj_attn." in k for k in renamed)
    save_file(renamed, str(src / VAE_WEIGHTS))
    model, config = load_diffusers_vae(src)
    save_diffusers_vae(model, tmp_path / "out", config)
    assert_same_tensors(load_file(tmp_path / "out" / VAE_WEIGHTS), tensors)


def test_vae_flax_model_dir_round_trip_gives_identical_outputs(vae_dir, tmp_path):
    model, config = load_diffusers_vae(vae_dir)
    save_flax_vae(model, tmp_path / "vae", config)
    restored, restored_config = load_flax_vae(tmp_path / "vae")
    assert restored_config == json.loads((tmp_path / "vae" / "config.json").read_text())
    assert restored.config == model.config
    images = jnp.asarray(np.tanh(np.random.default_rng(0).normal(size=(2, 32, 32, 3))), jnp.float32)
    for a, b in zip(vae_outputs(model, images), vae_outputs(restored, images)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_text_encoder_flax_model_dir_round_trip_gives_identical_outputs(te_dir, tmp_path):
    model, config = load_diffusers_text_encoder(te_dir)
    save_flax_text_encoder(model, tmp_path / "text_encoder", config)
    restored, _ = load_flax_text_encoder(tmp_path / "text_encoder")
    assert restored.config == model.config
    ids = jnp.asarray(np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 77)), jnp.int32)
    for a, b in zip(text_outputs(model, ids), text_outputs(restored, ids)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_param_and_compute_dtypes_are_applied(vae_dir, te_dir):
    vae, _ = load_diffusers_vae(vae_dir, param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.bfloat16 for v in numpy_params(vae).values())
    mean, _, images = vae_outputs(vae, jnp.zeros((1, 16, 16, 3)))
    assert mean.dtype == images.dtype == jnp.bfloat16
    text_encoder, _ = load_diffusers_text_encoder(te_dir, compute_dtype=jnp.bfloat16)
    assert all(v.dtype == np.float32 for v in numpy_params(text_encoder).values())
    hidden, _ = text_outputs(text_encoder, jnp.ones((1, 77), jnp.int32))
    assert hidden.dtype == jnp.bfloat16


# --- bad folders ---------------------------------------------------------------------------------------

LOADERS = {
    "vae": (load_diffusers_vae, VAE_WEIGHTS),
    "text_encoder": (load_diffusers_text_encoder, TE_WEIGHTS),
}


@pytest.fixture(params=sorted(LOADERS))
def component(request, vae_dir, te_dir, tmp_path):
    """(loader, a fresh copy of the tiny folder, its weight file name)."""
    load, weights = LOADERS[request.param]
    src = vae_dir if request.param == "vae" else te_dir
    return load, copy_folder(src, tmp_path / request.param), weights


def raises_one_line(fn, *args, match: str) -> str:
    with pytest.raises(ConversionError, match=match) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_config_is_an_error_naming_the_file(component):
    load, folder, _ = component
    (folder / "config.json").unlink()
    message = raises_one_line(load, folder, match="file not found")
    assert str(folder / "config.json") in message


def test_missing_weights_is_an_error_naming_the_folder(component):
    load, folder, weights = component
    (folder / weights).unlink()
    message = raises_one_line(load, folder, match="no weights found")
    assert message.startswith(str(folder))


def test_mismatched_tensor_shape_is_an_error_naming_the_folder_and_tensor(component):
    load, folder, weights = component
    tensors = load_file(folder / weights)
    key = next(k for k in sorted(tensors) if k.endswith("bias"))
    tensors[key] = np.zeros(tensors[key].shape[0] + 1, np.float32)
    save_file(tensors, str(folder / weights), metadata={"format": "pt"})
    message = raises_one_line(load, folder, match="has shape")
    assert message.startswith(str(folder)) and repr(key) in message


def test_missing_and_unexpected_tensors_are_an_error_naming_the_folder(component):
    load, folder, weights = component
    tensors = load_file(folder / weights)
    key = sorted(tensors)[0]
    tensors[key + "_renamed"] = tensors.pop(key)
    save_file(tensors, str(folder / weights), metadata={"format": "pt"})
    message = raises_one_line(load, folder, match="1 missing tensors.*1 unexpected tensors")
    assert message.startswith(str(folder)) and key in message


@pytest.mark.parametrize(
    "name, key, value",
    [("vae", "shift_factor", 0.5), ("vae", "act_fn", "gelu"), ("text_encoder", "hidden_act", "fast_gelu")],
)
def test_unsupported_config_key_is_an_error_naming_the_file_and_key(
    name, key, value, vae_dir, te_dir, tmp_path
):
    load, _ = LOADERS[name]
    folder = copy_folder(vae_dir if name == "vae" else te_dir, tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    message = raises_one_line(load, folder, match=key)
    assert message.startswith(str(folder / "config.json"))


def test_flax_dir_without_params_is_an_error_naming_the_checkpoint(vae_dir, tmp_path):
    model, config = load_diffusers_vae(vae_dir)
    save_flax_vae(model, tmp_path / "vae", config)
    shutil.rmtree(tmp_path / "vae" / "params")
    raises_one_line(load_flax_vae, tmp_path / "vae", match="params: parameter checkpoint not found")
