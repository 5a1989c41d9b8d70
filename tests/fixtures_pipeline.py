"""A tiny random InstructPix2Pix pipeline (stock or reward U-Net) saved by diffusers."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_sd import save_tiny_sd_components
from fixtures_unet import IP2P_LIKE, REWARD_LIKE, make_torch_unet

from rewardedit_jax.configs.sd15 import SD15_SCHEDULER

# A two-level 8-channel U-Net whose cross-attention width is the tiny text encoder's (32): fast to compile.
TWO_LEVEL_UNET = dict(
    IP2P_LIKE,
    cross_attention_dim=32,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)


def save_tiny_ip2p_pipeline(
    dst: Path, *, reward: bool = False, seed: int = 0, unet: dict | None = None, unet_seed: int | None = None
) -> Path:
    """Write a whole diffusers pipeline folder (unet, vae, text_encoder, tokenizer, scheduler).

    ``unet``: the U-Net config (default: ``REWARD_LIKE`` or ``IP2P_LIKE`` with cross-attention width 32;
    reward U-Nets get GroupNorm(32) as in SD); ``unet_seed``: its weights' seed (default ``seed``).
    """
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTokenizer

    dst = Path(dst)
    parts = dst.parent / f".{dst.name}-parts"
    save_tiny_sd_components(parts, seed=seed)
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    if unet is None:
        config = dict(REWARD_LIKE if reward else IP2P_LIKE, cross_attention_dim=32)
    else:
        config = dict(unet, norm_num_groups=32) if reward else dict(unet)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=AutoencoderKL.from_pretrained(str(parts / "vae")),
        text_encoder=CLIPTextModel.from_pretrained(str(parts / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(str(parts / "tokenizer")),
        unet=make_torch_unet(config, reward=reward, seed=seed if unet_seed is None else unet_seed),
        scheduler=EulerAncestralDiscreteScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(dst))
    if reward:  # the importable location of the reward U-Net class
        index = json.loads((dst / "model_index.json").read_text())
        index["unet"] = ["rewardedit_jax.torch_compat", "RewardUNet2DConditionModel"]
        (dst / "model_index.json").write_text(json.dumps(index))
    return dst


def save_tiny_two_level_pipeline(dst: Path, *, reward: bool = False) -> Path:
    """The tests' usual tiny pipeline: ``TWO_LEVEL_UNET`` (weights seed 3) with the seed-0 components."""
    return save_tiny_ip2p_pipeline(dst, reward=reward, unet=TWO_LEVEL_UNET, unet_seed=3)
