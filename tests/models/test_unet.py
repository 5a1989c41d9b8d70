"""The Flax U-Net (stock and reward-conditioned) against diffusers PyTorch on tiny random models."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures_unet import IP2P_LIKE, REWARD_LIKE, SD1_LIKE, SD2_LIKE, save_torch_unet
from flax import nnx

from rewardedit_jax import convert
from rewardedit_jax.convert.parity import (
    compare,
    nchw_to_nhwc,
    nhwc_to_nchw,
    run_flax_unet,
    run_torch_unet,
    unet_inputs,
)
from rewardedit_jax.models.layers import count_params, fill_random_
from rewardedit_jax.models.reward import RewardConfig
from rewardedit_jax.models.unet import UNetConfig, UnsupportedConfigError, build_unet

RTOL = 1e-4


@pytest.mark.parametrize(
    "name, config, size",
    [
        ("sd1_int_heads", SD1_LIKE, None),
        ("sd2_linear_proj_per_block_heads_upcast", SD2_LIKE, None),
        ("ip2p_8_channels", IP2P_LIKE, None),
        # 9 is not a multiple of the total downsampling (4): exercises the explicit upsample sizes.
        ("sd1_odd_latent_size", SD1_LIKE, 9),
    ],
)
def test_stock_unet_matches_diffusers(tmp_path, name, config, size):
    torch_model = save_torch_unet(tmp_path / name, config, seed=1)
    unet = convert.load_unet(tmp_path / name)
    assert not unet.has_reward
    inputs = unet_inputs(unet.config, size=size, seed=2)
    assert np.abs(inputs["sample"]).min() > 0
    result = compare("unet", "eps", run_flax_unet(unet, inputs), run_torch_unet(torch_model, inputs))
    assert result.rel <= RTOL, result


def test_reward_unet_matches_torch_compat(tmp_path):
    torch_model = save_torch_unet(tmp_path / "reward", REWARD_LIKE, reward=True, seed=3)
    unet = convert.load_unet(tmp_path / "reward")
    assert unet.has_reward
    assert unet.config.reward == RewardConfig()
    inputs = unet_inputs(unet.config, seed=4)
    result = compare("unet", "eps", run_flax_unet(unet, inputs), run_torch_unet(torch_model, inputs))
    assert result.rel <= RTOL, result


def test_reward_scores_and_feedback_change_the_output(tmp_path):
    save_torch_unet(tmp_path / "reward", REWARD_LIKE, reward=True, seed=3)
    unet = convert.load_unet(tmp_path / "reward")
    inputs = unet_inputs(unet.config, seed=5)
    # One batch of three copies: as given, other scores, other feedback embedding.
    batch = {k: np.concatenate([v, v, v]) for k, v in inputs.items()}
    batch["reward_scores"][2:4] = inputs["reward_scores"][::-1]
    batch["feedback_embeds"][4:6] = -inputs["feedback_embeds"]
    out = run_flax_unet(unet, batch)
    base, other_scores, other_text = out[0:2], out[2:4], out[4:6]
    assert np.abs(base - other_scores).max() > 1e-3
    assert np.abs(base - other_text).max() > 1e-3


def test_input_gradients_match_diffusers(tmp_path):
    torch_model = save_torch_unet(tmp_path / "sd1", SD1_LIKE, seed=6)
    unet = convert.load_unet(tmp_path / "sd1")
    inputs = unet_inputs(unet.config, seed=7)
    weights = np.random.default_rng(8).standard_normal(inputs["sample"].shape[:3] + (4,)).astype(np.float32)

    graphdef, state = nnx.split(unet)

    def loss(sample, context):
        out = nnx.merge(graphdef, state)(sample, jnp.asarray(inputs["timesteps"]), context)
        return jnp.sum(out * weights)

    g_sample, g_context = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        jnp.asarray(inputs["sample"]), jnp.asarray(inputs["encoder_hidden_states"])
    )

    sample = torch.from_numpy(nhwc_to_nchw(inputs["sample"])).requires_grad_(True)
    context = torch.from_numpy(inputs["encoder_hidden_states"]).requires_grad_(True)
    out = torch_model(sample, torch.from_numpy(inputs["timesteps"]), context).sample
    (out * torch.from_numpy(nhwc_to_nchw(weights))).sum().backward()

    assert compare("unet", "d/dsample", g_sample, nchw_to_nhwc(sample.grad.numpy())).rel <= RTOL
    assert compare("unet", "d/dcontext", g_context, context.grad.numpy()).rel <= RTOL


def test_reward_dropout_is_active_only_in_training():
    cfg = UNetConfig.from_diffusers(REWARD_LIKE, reward=RewardConfig())
    unet = build_unet(cfg, seed=0)
    inputs = {k: jnp.asarray(v) for k, v in unet_inputs(cfg, seed=9).items()}
    forward = nnx.jit(lambda model, inputs: model(**inputs))
    eval_a, eval_b = forward(unet, inputs), forward(unet, inputs)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    unet.train()
    train_a, train_b = forward(unet, inputs), forward(unet, inputs)
    assert np.abs(np.asarray(train_a) - np.asarray(train_b)).max() > 1e-4
    unet.eval()
    np.testing.assert_array_equal(np.asarray(forward(unet, inputs)), np.asarray(eval_a))


def test_reward_sizes_derive_from_the_unet_config():
    cfg = UNetConfig.from_diffusers(dict(SD2_LIKE, block_out_channels=(32, 64)), reward=RewardConfig())
    unet = build_unet(cfg, abstract=True)
    reward = unet.reward
    assert reward.add_embedding.linear_1.kernel.shape == (3 * 256, 4 * 32)
    assert reward.add_embedding2.linear_2.kernel.shape == (32, 32)
    assert reward.text_linear.kernel.shape == (40, 32)
    assert reward.text_linear2.kernel.shape == (40, 128)


def test_calling_convention_errors_are_clear():
    cfg = UNetConfig.from_diffusers(SD1_LIKE)
    unet = build_unet(cfg)
    x = jnp.ones((1, 8, 8, 4))
    ctx = jnp.ones((1, 3, 24))
    with pytest.raises(ValueError, match="no reward conditioning"):
        unet(x, jnp.ones(1), ctx, reward_scores=jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"NHWC \(B, H, W, 4\)"):
        unet(jnp.ones((1, 4, 8, 8)), jnp.ones(1), ctx)
    reward_unet = build_unet(UNetConfig.from_diffusers(REWARD_LIKE, reward=RewardConfig()))
    with pytest.raises(ValueError, match="needs reward_scores"):
        reward_unet(jnp.ones((1, 8, 8, 8)), jnp.ones(1), ctx)


@pytest.mark.parametrize(
    "key, value",
    [
        ("class_embed_type", "timestep"),
        ("time_embedding_type", "fourier"),
        ("only_cross_attention", True),
        ("resnet_time_scale_shift", "scale_shift"),
        ("encoder_hid_dim", 16),
        ("some_future_key", 3),
    ],
)
def test_unsupported_config_key_is_named(key, value):
    with pytest.raises(UnsupportedConfigError, match=key):
        UNetConfig.from_diffusers({**SD1_LIKE, key: value})


def test_unsupported_block_type_is_named():
    bad = {
        **SD1_LIKE,
        "down_block_types": ("CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D"),
    }
    with pytest.raises(UnsupportedConfigError, match="SimpleCrossAttnDownBlock2D"):
        UNetConfig.from_diffusers(bad)


def test_parameters_carry_logical_axis_names():
    unet = build_unet(UNetConfig.from_diffusers(SD1_LIKE), abstract=True)
    for path, var in nnx.to_flat_state(nnx.state(unet, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == len(var.get_value().shape), path
    assert unet.conv_in.kernel.get_metadata()["out_sharding"] == (None, None, "conv_in", "conv_out")
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn.to_q.kernel.get_metadata()["out_sharding"] == ("embed", "heads")


SD15_IP2P = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


@pytest.mark.heavy
def test_sd15_ip2p_size_builds_with_exact_parameter_count_and_runs_jitted():
    cfg = UNetConfig.from_diffusers(SD15_IP2P)
    assert count_params(build_unet(cfg, abstract=True)) == 859_532_484
    reward_cfg = dataclasses.replace(cfg, reward=RewardConfig())
    # The official reward modules: add_embedding 768->1280->1280, add_embedding2 768->320->320,
    # text_linear 768->320, text_linear2 768->1280, proj_deal (norm + two 1x1 convs), ca (6 dense + 2 LN).
    reward_params = (768 * 1280 + 1280 + 1280 * 1280 + 1280) + (768 * 320 + 320 + 320 * 320 + 320)
    reward_params += (768 * 320 + 320) + (768 * 1280 + 1280) + (2 * 320) + 2 * (320 * 320 + 320)
    reward_params += 6 * (320 * 320 + 320) + 2 * (2 * 320)
    assert count_params(build_unet(reward_cfg, abstract=True)) == 859_532_484 + reward_params

    unet = fill_random_(build_unet(cfg, abstract=True), seed=0)
    graphdef, state = nnx.split(unet)
    rng = np.random.default_rng(0)
    sample = jnp.asarray(rng.standard_normal((1, 32, 32, 8)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((1, 77, 768)), jnp.float32)
    out = jax.jit(lambda s, x, c: nnx.merge(graphdef, s)(x, jnp.array([500.0]), c))(state, sample, context)
    assert out.shape == (1, 32, 32, 4)
    assert np.isfinite(np.asarray(out)).all()


def test_rematerialized_blocks_give_the_same_output_and_gradients():
    unet = build_unet(UNetConfig.from_diffusers(SD1_LIKE), seed=3)
    inputs = {k: jnp.asarray(v) for k, v in unet_inputs(unet.config, seed=10).items()}

    def loss(model, sample):
        return jnp.sum(model(sample, inputs["timesteps"], inputs["encoder_hidden_states"]) ** 2)

    grad = nnx.jit(nnx.value_and_grad(loss, argnums=1))
    plain = grad(unet, inputs["sample"])
    unet.remat = True
    remat = grad(unet, inputs["sample"])
    np.testing.assert_allclose(np.asarray(remat[0]), np.asarray(plain[0]), rtol=1e-5)
    assert compare("unet", "d/dsample", remat[1], plain[1]).rel <= 1e-5
