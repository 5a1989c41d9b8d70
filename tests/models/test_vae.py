"""The Flax AutoencoderKL matches diffusers' numerically, validates its config, and builds at SD 1.5 size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures_sd import save_tiny_vae
from flax import nnx

from rewardedit_jax.convert.mapping import to_torch_layout, torch_key
from rewardedit_jax.convert.parity import compare
from rewardedit_jax.convert.vae import load_diffusers_vae
from rewardedit_jax.models.layers import UnsupportedConfigError, count_params, fill_random_
from rewardedit_jax.models.vae import AutoencoderKL, VAEConfig, build_vae

# Config A: 2 blocks, 1 resnet per block, mid-block attention, both quant convs, square images.
# Config B: 3 blocks, 2 resnets per block, 3 latent channels, no mid attention, no post_quant_conv.
CONFIGS = {
    "A": ({}, (2, 32, 32)),
    "B": (
        {
            "block_out_channels": [8, 16, 16],
            "layers_per_block": 2,
            "latent_channels": 3,
            "norm_num_groups": 4,
            "mid_block_add_attention": False,
            "use_post_quant_conv": False,
        },
        (1, 24, 40),
    ),
}
SD15_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 512,
}
SD15_VAE_PARAMS = 83_653_863


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref||."""
    return compare("", "", out, ref).rel


def torch_shapes(model, renames=()) -> dict[str, tuple[int, ...]]:
    """PyTorch state-dict key -> shape of every parameter of a (possibly abstract) Flax model."""
    shapes = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        dummy = np.broadcast_to(np.int8(0), var.get_value().shape)  # no memory
        shapes[torch_key(path, renames)] = tuple(to_torch_layout(str(path[-1]), dummy).shape)
    return shapes


def nchw(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)


@nnx.jit
def encode(model, images):
    return model.encode(images)


@nnx.jit
def decode(model, latents):
    return model.decode(latents)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def vae_pair(request, tmp_path_factory):
    overrides, shape = CONFIGS[request.param]
    folder = tmp_path_factory.mktemp(f"vae_{request.param}")
    save_tiny_vae(folder, seed=3, **overrides)
    from diffusers import AutoencoderKL as TorchAutoencoderKL

    reference = TorchAutoencoderKL.from_pretrained(str(folder)).eval()
    model, _ = load_diffusers_vae(folder)
    return reference, model, shape


def test_encode_matches_diffusers_posterior(vae_pair):
    reference, model, (batch, height, width) = vae_pair
    rng = np.random.default_rng(0)
    images = np.tanh(rng.normal(size=(batch, height, width, 3))).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(nchw(images))).latent_dist
    mean, logvar = encode(model, jnp.asarray(images))
    f = model.config.downsample_factor
    assert mean.shape == logvar.shape == (batch, height // f, width // f, model.config.latent_channels)
    assert rel_err(nchw(mean), posterior.mean.numpy()) <= 1e-4
    assert rel_err(nchw(logvar), posterior.logvar.numpy()) <= 1e-4


def test_decode_matches_diffusers(vae_pair):
    reference, model, (batch, height, width) = vae_pair
    f = model.config.downsample_factor
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(batch, height // f, width // f, model.config.latent_channels)).astype(
        np.float32
    )
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(nchw(latents))).sample.numpy()
    images = decode(model, jnp.asarray(latents))
    assert images.shape == (batch, height, width, 3)
    assert rel_err(nchw(images), expected) <= 1e-4


def test_logvar_is_clipped_like_diffusers():
    cfg = VAEConfig(block_out_channels=(8,), norm_num_groups=4, latent_channels=2)
    model = fill_random_(build_vae(cfg, abstract=True))  # an eager Flax init takes seconds on CPU
    bias = model.quant_conv.bias
    bias.set_value(bias.get_value().at[2:].set(1e4).at[:2].set(-1e4))  # logvar channels far above 20
    mean, logvar = encode(model, jnp.zeros((1, 8, 8, 3)))
    np.testing.assert_array_equal(np.asarray(logvar), 20.0)
    assert float(mean.max()) < -1e3  # the mean is not clipped
    bias.set_value(bias.get_value().at[2:].set(-1e4))
    _, logvar = encode(model, jnp.zeros((1, 8, 8, 3)))
    np.testing.assert_array_equal(np.asarray(logvar), -30.0)


def test_posterior_sample_has_mean_and_std_of_the_posterior_and_mode_is_the_mean():
    mean = jnp.full((4, 64, 64, 4), 1.5)
    logvar = jnp.full((4, 64, 64, 4), np.log(4.0))
    sample = AutoencoderKL.sample(mean, logvar, jax.random.key(0))
    assert sample.shape == mean.shape and sample.dtype == mean.dtype
    assert abs(float(sample.mean()) - 1.5) < 0.02
    assert abs(float(sample.std()) - 2.0) < 0.02
    assert not np.array_equal(sample, AutoencoderKL.sample(mean, logvar, jax.random.key(1)))
    assert AutoencoderKL.mode(mean, logvar) is mean


@pytest.mark.parametrize(
    "key, value",
    [
        ("shift_factor", 0.1159),
        ("latents_mean", [0.0] * 4),
        ("act_fn", "gelu"),
        ("down_block_types", ["AttnDownEncoderBlock2D"]),
        ("up_block_types", ["UpDecoderBlock2D", "UpDecoderBlock2D"]),
        ("layers_per_block", [1]),
        ("norm_num_groups", 7),
        ("use_torch_magic", True),
    ],
)
def test_unsupported_config_key_is_an_error_naming_the_key(key, value):
    config = {"block_out_channels": [64], "down_block_types": ["DownEncoderBlock2D"], key: value}
    with pytest.raises(
        UnsupportedConfigError, match=key if key != "norm_num_groups" else "norm_num_groups=7"
    ):
        VAEConfig.from_diffusers(config)


def test_config_ignores_keys_without_effect_and_reads_the_rest():
    cfg = VAEConfig.from_diffusers(
        {
            **SD15_VAE,
            "_class_name": "AutoencoderKL",
            "force_upcast": True,
            "act_fn": "silu",
            "scaling_factor": 0.13025,
        }
    )
    assert cfg.block_out_channels == (128, 256, 512, 512) and cfg.downsample_factor == 8
    assert cfg.scaling_factor == 0.13025 and build_vae(cfg, abstract=True).scaling_factor == 0.13025


def test_inputs_of_the_wrong_layout_are_rejected():
    model = build_vae(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4), abstract=True)
    with pytest.raises(ValueError, match="NHWC"):
        model.encode(jnp.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(jnp.zeros((1, 15, 16, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.decode(jnp.zeros((1, 4, 8, 8)))


@pytest.mark.heavy
def test_sd15_vae_has_the_diffusers_parameters_and_runs_jitted():
    from diffusers import AutoencoderKL as TorchAutoencoderKL

    abstract = build_vae(SD15_VAE, abstract=True)
    assert count_params(abstract) == SD15_VAE_PARAMS
    with torch.device("meta"):
        reference = TorchAutoencoderKL(**SD15_VAE)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert torch_shapes(abstract) == expected

    model = fill_random_(abstract)
    images = jnp.asarray(np.tanh(np.random.default_rng(0).normal(size=(1, 64, 64, 3))), jnp.float32)

    @nnx.jit
    def reconstruct(model, images):
        mean, logvar = model.encode(images)
        return mean, logvar, model.decode(mean)

    mean, logvar, out = reconstruct(model, images)
    assert mean.shape == (1, 8, 8, 4) and logvar.shape == (1, 8, 8, 4) and out.shape == (1, 64, 64, 3)
    assert np.isfinite(np.asarray(out)).all() and float(jnp.abs(out).mean()) > 0
