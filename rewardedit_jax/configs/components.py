"""Configs of the model components from their sizes: diffusers' ``UNet2DConditionModel`` and
``AutoencoderKL``, transformers' ``CLIPTextModel``.

A component config is a plain dict of the library's own keys (what ``config.json`` holds); these functions
derive what follows from the sizes (the block types of each level, the mirrored up path) so that a config
names only what sets its model apart. SD 1.5 (:mod:`rewardedit_jax.configs.sd15`), the demo's model, the
tiny test model (``configs/test_tiny.py``) and the benchmarks' tiny models are built with them.
"""

from __future__ import annotations

from collections.abc import Sequence


def unet_config(
    block_out_channels: Sequence[int],
    attention: Sequence[bool],
    *,
    cross_attention_dim: int,
    attention_head_dim: int,
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
    **extra,
) -> dict:
    """A U-Net with one level per entry of ``block_out_channels`` (finest first), cross-attention blocks at
    the levels where ``attention`` is true, and an up path that mirrors the down path.

    ``extra``: any other ``UNet2DConditionModel`` key (``in_channels``, ``out_channels``, ``act_fn``...).
    """
    if len(attention) != len(block_out_channels):
        raise ValueError(
            f"attention has {len(attention)} entries for {len(block_out_channels)} levels "
            f"(block_out_channels {list(block_out_channels)}); give one per level"
        )
    return dict(
        block_out_channels=list(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        **extra,
    )


def vae_config(
    block_out_channels: Sequence[int], *, layers_per_block: int = 1, norm_num_groups: int = 32, **extra
) -> dict:
    """A VAE with one level per entry of ``block_out_channels`` and 4 latent channels; ``extra``: any other
    ``AutoencoderKL`` key (``scaling_factor``...)."""
    levels = len(block_out_channels)
    return dict(
        block_out_channels=list(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        **extra,
    )


def clip_text_config(vocab_size: int, width: int, mlp: int, layers: int, heads: int, **token_ids) -> dict:
    """CLIP's text encoder (77 positions, quick GELU) of ``layers`` layers of ``width`` channels, ``heads``
    attention heads and an MLP of ``mlp`` channels; ``token_ids``: ``bos_token_id``, ``eos_token_id``,
    ``pad_token_id`` where they differ from transformers' defaults."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        **token_ids,
    )


def tiny_text_config(vocab_size: int) -> dict:
    """The tiny test and benchmark text encoder (2 layers of 32 channels) over a tokenizer of
    ``vocab_size`` tokens whose last two are start and end of text (the end token also pads)."""
    ends = dict(bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return clip_text_config(vocab_size, width=32, mlp=37, layers=2, heads=4, **ends)
