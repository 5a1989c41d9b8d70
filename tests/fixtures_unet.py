"""Tiny random diffusers U-Nets saved to folders, shared by the model and conversion tests."""

from __future__ import annotations

from pathlib import Path

import torch

SD1_LIKE = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24,
    attention_head_dim=4,
    norm_num_groups=8,
)
SD2_LIKE = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=40,
    attention_head_dim=[2, 4],
    use_linear_projection=True,
    upcast_attention=True,
    norm_num_groups=16,
    norm_eps=1e-6,
    flip_sin_to_cos=False,
    freq_shift=1,
)
# One level in pixel space (source and noisy RGB in, RGB out) under the tiny text encoder of fixtures_sd:
# the model of the pure train step tests.
PIXEL_LIKE = dict(
    SD1_LIKE,
    in_channels=6,
    out_channels=3,
    block_out_channels=(32,),
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=32,
    attention_head_dim=2,
)
IP2P_LIKE = dict(SD1_LIKE, in_channels=8, block_out_channels=(32, 48, 64), layers_per_block=2)
# The reward variant needs GroupNorm(32) at block_out_channels[0] like SD (proj_deal uses norm_num_groups).
REWARD_LIKE = dict(IP2P_LIKE, block_out_channels=(32, 64, 64), norm_num_groups=32, layers_per_block=1)


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter (including norm scales and zero biases) so nothing is trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def make_torch_unet(config: dict, *, reward: bool = False, seed: int = 0):
    from diffusers import UNet2DConditionModel

    from rewardedit_jax.torch_compat import RewardUNet2DConditionModel

    torch.manual_seed(seed)
    cls = RewardUNet2DConditionModel if reward else UNet2DConditionModel
    return randomize_(cls(**config), seed)


def save_torch_unet(dst: Path, config: dict, *, reward: bool = False, seed: int = 0, **save_kwargs):
    model = make_torch_unet(config, reward=reward, seed=seed)
    model.save_pretrained(str(dst), **save_kwargs)
    return model
