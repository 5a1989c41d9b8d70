"""The Stable Diffusion conditional U-Net in Flax NNX, with InstructPix2Pix input concatenation and the
reward conditioning of Gu et al. 2024 (Fig. 3; docs/sources.md, "Reward-conditioned U-Net").

:class:`UNetConfig` is read from a diffusers ``unet/config.json`` (SD 1.x and SD 2.x families); any key
this implementation does not model, set to a non-default value, is an error naming the key. The module
tree mirrors diffusers' ``UNet2DConditionModel`` attribute names, so weights convert by renaming.
Layout is NHWC: ``sample`` (B, H, W, C_in) -> epsilon/v (B, H, W, C_out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rewardedit_jax.models.attention import Attention
from rewardedit_jax.models.layers import (
    Dtype,
    TimestepEmbedding,
    UnsupportedConfigError,
    build_model,
    check_config_keys,
    conv2d,
    dropout,
    gelu_exact,
    group_norm,
    layer_norm,
    linear,
    timestep_embedding,
)
from rewardedit_jax.models.reward import RewardConditioning, RewardConfig

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

# diffusers UNet2DConditionModel keys that must keep their default value here (key -> default).
_FIXED_DEFAULTS: dict[str, Any] = {
    "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "act_fn": "silu",
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
# Keys whose value is irrelevant to the computation (and the addition-embedding keys that the official
# Reward-InsPix2Pix code ignores; its reward modules are recognized by their weights).
_IGNORED = {
    "sample_size",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "addition_embed_type_num_heads",
    # Reward-module hyperparameters written by rewardedit_jax.torch_compat (read by the converter).
    "reward_score_embed_dim",
    "reward_num_heads",
}


def _per_block(value: Any, n: int, key: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise UnsupportedConfigError(f"config key {key!r} has {len(value)} entries for {n} blocks")
        return tuple(value)
    return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The architecture of a SD 1.x/2.x U-Net, normalized from a diffusers config (per-block tuples)."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: tuple[int, ...] = (768, 768, 768, 768)
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    resnet_out_scale_factor: float = 1.0
    dropout: float = 0.0
    reward: RewardConfig | None = None

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], reward: RewardConfig | None = None) -> UNetConfig:
        """Validate and normalize a diffusers ``UNet2DConditionModel`` config dict."""
        fixed = {**_FIXED_DEFAULTS, "mid_block_only_cross_attention": {None, False}}
        check_config_keys(config, what="U-Net", known=_KNOWN_KEYS, fixed=fixed, ignored=_IGNORED)
        down = tuple(config.get("down_block_types", cls.down_block_types))
        up = tuple(config.get("up_block_types", cls.up_block_types))
        for kind, types, allowed in (("down", down, DOWN_BLOCK_TYPES), ("up", up, UP_BLOCK_TYPES)):
            for t in types:
                if t not in allowed:
                    raise UnsupportedConfigError(
                        f"unsupported {kind} block type {t!r} (supported: {allowed})"
                    )
        n = len(down)
        channels = tuple(int(c) for c in config.get("block_out_channels", cls.block_out_channels))
        if len(channels) != n or len(up) != n:
            raise UnsupportedConfigError(
                f"block_out_channels ({len(channels)}), down_block_types ({n}) and up_block_types ({len(up)})"
                " must have the same length"
            )
        heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
        tlpb = config.get("transformer_layers_per_block", 1)
        if isinstance(tlpb, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in tlpb):
            raise UnsupportedConfigError("config key 'transformer_layers_per_block' with nested lists")
        groups = config.get("norm_num_groups", 32)
        if groups is None:
            raise UnsupportedConfigError("unsupported U-Net config key 'norm_num_groups'=None")
        cfg = cls(
            in_channels=int(config.get("in_channels", 4)),
            out_channels=int(config.get("out_channels", 4)),
            block_out_channels=channels,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=tuple(
                int(v) for v in _per_block(config.get("layers_per_block", 2), n, "layers_per_block")
            ),
            transformer_layers_per_block=tuple(
                int(v) for v in _per_block(tlpb, n, "transformer_layers_per_block")
            ),
            num_attention_heads=tuple(int(v) for v in _per_block(heads, n, "attention_head_dim")),
            cross_attention_dim=tuple(
                int(v) for v in _per_block(config.get("cross_attention_dim", 1280), n, "cross_attention_dim")
            ),
            use_linear_projection=bool(config.get("use_linear_projection", False)),
            upcast_attention=bool(config.get("upcast_attention", False)),
            norm_num_groups=int(groups),
            norm_eps=float(config.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
            freq_shift=float(config.get("freq_shift", 0)),
            downsample_padding=int(config.get("downsample_padding", 1)),
            mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)),
            resnet_out_scale_factor=float(config.get("resnet_out_scale_factor", 1.0)),
            dropout=float(config.get("dropout", 0.0)),
            reward=reward,
        )
        for c, h in zip(channels, cfg.num_attention_heads):
            if c % h:
                raise UnsupportedConfigError(f"block width {c} is not divisible by {h} attention heads")
        return cfg


_KNOWN_KEYS = {f.name for f in dataclasses.fields(UNetConfig)} | {"attention_head_dim", "num_attention_heads"}


class ResnetBlock2D(nnx.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between, and a 1x1 shortcut.

    ``temb_channels=None`` gives the VAE's variant without a time embedding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        *,
        groups: int,
        eps: float,
        dropout_rate: float = 0.0,
        output_scale_factor: float = 1.0,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        self.norm1 = group_norm(in_channels, groups, eps, rngs=rngs, dtype=dtype)
        self.conv1 = conv2d(in_channels, out_channels, 3, rngs=rngs, dtype=dtype)
        self.time_emb_proj = (
            linear(temb_channels, out_channels, rngs=rngs, dtype=dtype) if temb_channels is not None else None
        )
        self.norm2 = group_norm(out_channels, groups, eps, rngs=rngs, dtype=dtype)
        self.dropout = dropout(dropout_rate, rngs=rngs)
        self.conv2 = conv2d(out_channels, out_channels, 3, rngs=rngs, dtype=dtype)
        self.conv_shortcut = (
            conv2d(in_channels, out_channels, 1, rngs=rngs, dtype=dtype)
            if in_channels != out_channels
            else None
        )
        self.output_scale_factor = output_scale_factor

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(self.dropout(jax.nn.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class GEGLU(nnx.Module):
    def __init__(self, dim: int, inner: int, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.proj = linear(dim, inner * 2, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(self.proj(x), 2, axis=-1)
        return hidden * gelu_exact(gate)


class FeedForward(nnx.Module):
    """``net.0`` GEGLU, ``net.2`` output projection (``net.1`` is a parameter-free dropout)."""

    def __init__(self, dim: int, *, mult: int = 4, rngs: nnx.Rngs, dtype: Dtype = None):
        inner = dim * mult
        self.net = nnx.List(
            [
                GEGLU(dim, inner, rngs=rngs, dtype=dtype),
                None,
                linear(inner, dim, axes=("mlp", "embed"), rngs=rngs, dtype=dtype),
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nnx.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int,
        *,
        upcast: bool,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        self.norm1 = layer_norm(dim, 1e-5, rngs=rngs, dtype=dtype)
        self.attn1 = Attention(dim, heads=heads, head_dim=head_dim, upcast=upcast, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, 1e-5, rngs=rngs, dtype=dtype)
        self.attn2 = Attention(
            dim,
            heads=heads,
            head_dim=head_dim,
            context_dim=context_dim,
            upcast=upcast,
            rngs=rngs,
            dtype=dtype,
        )
        self.norm3 = layer_norm(dim, 1e-5, rngs=rngs, dtype=dtype)
        self.ff = FeedForward(dim, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nnx.Module):
    """Spatial transformer: GroupNorm, ``proj_in`` (1x1 conv or linear), blocks, ``proj_out``, residual."""

    def __init__(
        self,
        channels: int,
        heads: int,
        context_dim: int,
        *,
        num_layers: int,
        groups: int,
        use_linear_projection: bool,
        upcast: bool,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        head_dim = channels // heads
        inner = heads * head_dim
        self.norm = group_norm(channels, groups, 1e-6, rngs=rngs, dtype=dtype)
        if use_linear_projection:
            self.proj_in = linear(channels, inner, rngs=rngs, dtype=dtype)
            self.proj_out = linear(inner, channels, axes=("mlp", "embed"), rngs=rngs, dtype=dtype)
        else:
            self.proj_in = conv2d(channels, inner, 1, rngs=rngs, dtype=dtype)
            self.proj_out = conv2d(inner, channels, 1, rngs=rngs, dtype=dtype)
        self.transformer_blocks = nnx.List(
            [
                BasicTransformerBlock(
                    inner, heads, head_dim, context_dim, upcast=upcast, rngs=rngs, dtype=dtype
                )
                for _ in range(num_layers)
            ]
        )

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        hidden = self.proj_in(self.norm(x))
        hidden = hidden.reshape(b, h * w, hidden.shape[-1])
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        return self.proj_out(hidden.reshape(b, h, w, -1)) + x


class Downsample2D(nnx.Module):
    def __init__(self, channels: int, padding: int, *, rngs: nnx.Rngs, dtype: Dtype = None):
        # diffusers pads (0, 1) on both spatial axes when padding == 0.
        pad = ((0, 1), (0, 1)) if padding == 0 else padding
        self.conv = conv2d(channels, channels, 3, stride=2, padding=pad, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


def upsample_nearest(x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """Nearest-neighbour upsampling (PyTorch ``interpolate(mode='nearest')`` index rule), NHWC."""
    h, w = x.shape[1:3]
    if size is None or tuple(size) == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = (jnp.arange(size[0]) * h) // size[0]
    cols = (jnp.arange(size[1]) * w) // size[1]
    return x[:, rows][:, :, cols]


class Upsample2D(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv2d(channels, channels, 3, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
        return self.conv(upsample_nearest(x, size))


def _resnet(cfg: UNetConfig, in_channels: int, out_channels: int, rngs, dtype, scale=None) -> ResnetBlock2D:
    """A U-Net resnet block: the config's time embedding, norm and dropout; `scale` (default: the config's
    ``resnet_out_scale_factor``) divides its output."""
    return ResnetBlock2D(
        in_channels,
        out_channels,
        cfg.time_embed_dim,
        groups=cfg.norm_num_groups,
        eps=cfg.norm_eps,
        dropout_rate=cfg.dropout,
        output_scale_factor=cfg.resnet_out_scale_factor if scale is None else scale,
        rngs=rngs,
        dtype=dtype,
    )


class DownBlock(nnx.Module):
    """``CrossAttnDownBlock2D`` (with ``attentions``) or ``DownBlock2D`` (``attentions`` None)."""

    def __init__(self, cfg: UNetConfig, index: int, in_channels: int, *, rngs: nnx.Rngs, dtype: Dtype):
        out_channels = cfg.block_out_channels[index]
        cross = cfg.down_block_types[index] == "CrossAttnDownBlock2D"
        self.resnets = nnx.List(
            [
                _resnet(cfg, in_channels if i == 0 else out_channels, out_channels, rngs, dtype)
                for i in range(cfg.layers_per_block[index])
            ]
        )
        count = cfg.layers_per_block[index]
        self.attentions = _transformers(cfg, index, out_channels, count, rngs, dtype) if cross else None
        is_final = index == len(cfg.block_out_channels) - 1
        self.downsamplers = (
            None
            if is_final
            else nnx.List([Downsample2D(out_channels, cfg.downsample_padding, rngs=rngs, dtype=dtype)])
        )

    def __call__(self, x, temb, context) -> tuple[jax.Array, list[jax.Array]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


def _transformers(cfg: UNetConfig, level: int, channels: int, count: int, rngs, dtype) -> nnx.List:
    """The ``count`` transformer blocks of a cross-attention block at resolution ``level``."""
    return nnx.List(
        [
            Transformer2DModel(
                channels,
                cfg.num_attention_heads[level],
                cfg.cross_attention_dim[level],
                num_layers=cfg.transformer_layers_per_block[level],
                groups=cfg.norm_num_groups,
                use_linear_projection=cfg.use_linear_projection,
                upcast=cfg.upcast_attention,
                rngs=rngs,
                dtype=dtype,
            )
            for _ in range(count)
        ]
    )


class UpBlock(nnx.Module):
    """``CrossAttnUpBlock2D`` or ``UpBlock2D``: each resnet consumes one skip connection."""

    def __init__(self, cfg: UNetConfig, index: int, prev_channels: int, *, rngs: nnx.Rngs, dtype: Dtype):
        n = len(cfg.block_out_channels)
        rev_channels = cfg.block_out_channels[::-1]
        out_channels = rev_channels[index]
        in_channels = rev_channels[min(index + 1, n - 1)]
        rev = n - 1 - index  # the matching down-block index
        cross = cfg.up_block_types[index] == "CrossAttnUpBlock2D"
        num_layers = cfg.layers_per_block[rev] + 1
        resnets = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_channels if i == 0 else out_channels
            resnets.append(_resnet(cfg, resnet_in + skip, out_channels, rngs, dtype))
        self.resnets = nnx.List(resnets)
        self.attentions = _transformers(cfg, rev, out_channels, num_layers, rngs, dtype) if cross else None
        self.upsamplers = (
            None if index == n - 1 else nnx.List([Upsample2D(out_channels, rngs=rngs, dtype=dtype)])
        )

    def __call__(self, x, temb, context, skips: list[jax.Array], upsample_size=None) -> jax.Array:
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock(nnx.Module):
    """``UNetMidBlock2DCrossAttn``: resnet, (attention, resnet) x 1."""

    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs, dtype: Dtype):
        c = cfg.block_out_channels[-1]
        self.resnets = nnx.List(
            [_resnet(cfg, c, c, rngs, dtype, cfg.mid_block_scale_factor) for _ in range(2)]
        )
        self.attentions = _transformers(cfg, -1, c, 1, rngs, dtype)

    def __call__(self, x, temb, context) -> jax.Array:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UNet2DConditionModel(nnx.Module):
    """Conditional U-Net: ``unet(sample, timesteps, encoder_hidden_states, reward_scores, feedback_embeds)``.

    With ``cfg.reward`` set, the reward conditioning of :mod:`rewardedit_jax.models.reward` is applied
    (scores and feedback embedding into the time embedding; latent cross-attention after ``conv_in``);
    without it the model is exactly a stock (InstructPix2Pix) U-Net. Built in inference mode; call
    ``.train()`` to enable dropout.
    """

    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.config = cfg
        c0 = cfg.block_out_channels[0]
        self.conv_in = conv2d(cfg.in_channels, c0, 3, rngs=rngs, dtype=dtype)
        self.time_embedding = TimestepEmbedding(c0, cfg.time_embed_dim, rngs=rngs, dtype=dtype)
        self.reward = (
            RewardConditioning(
                cfg.reward,
                channels=c0,
                time_embed_dim=cfg.time_embed_dim,
                text_dim=cfg.cross_attention_dim[0],
                groups=cfg.norm_num_groups,
                flip_sin_to_cos=cfg.flip_sin_to_cos,
                freq_shift=cfg.freq_shift,
                rngs=rngs,
                dtype=dtype,
            )
            if cfg.reward is not None
            else None
        )
        self.down_blocks = nnx.List()
        channels = c0
        for i in range(len(cfg.block_out_channels)):
            self.down_blocks.append(DownBlock(cfg, i, channels, rngs=rngs, dtype=dtype))
            channels = cfg.block_out_channels[i]
        self.mid_block = MidBlock(cfg, rngs=rngs, dtype=dtype)
        self.up_blocks = nnx.List()
        prev = cfg.block_out_channels[-1]
        for i in range(len(cfg.block_out_channels)):
            self.up_blocks.append(UpBlock(cfg, i, prev, rngs=rngs, dtype=dtype))
            prev = cfg.block_out_channels[::-1][i]
        self.conv_norm_out = group_norm(c0, cfg.norm_num_groups, cfg.norm_eps, rngs=rngs, dtype=dtype)
        self.conv_out = conv2d(c0, cfg.out_channels, 3, rngs=rngs, dtype=dtype)
        self.dtype = dtype
        # Rematerialize each down/mid/up block in the backward pass (less activation memory, ~30% more
        # compute). Set before jit/split: ``unet.remat = True``.
        self.remat = False

    @property
    def has_reward(self) -> bool:
        return self.reward is not None

    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array,
        encoder_hidden_states: jax.Array,
        reward_scores: jax.Array | None = None,
        feedback_embeds: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        if sample.ndim != 4 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"sample must be NHWC (B, H, W, {cfg.in_channels}); got shape {tuple(sample.shape)}"
            )
        batch = sample.shape[0]
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"encoder_hidden_states must be (B={batch}, L, D); got {tuple(encoder_hidden_states.shape)}"
            )
        if self.reward is None and (reward_scores is not None or feedback_embeds is not None):
            raise ValueError(
                "this U-Net has no reward conditioning; reward_scores/feedback_embeds must be None"
            )
        if self.reward is not None and (reward_scores is None or feedback_embeds is None):
            raise ValueError("this reward U-Net needs reward_scores (B, 3) and feedback_embeds (B, D_text)")
        dtype = self.dtype or sample.dtype
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
        t_emb = timestep_embedding(
            timesteps,
            cfg.block_out_channels[0],
            flip_sin_to_cos=cfg.flip_sin_to_cos,
            downscale_freq_shift=cfg.freq_shift,
        ).astype(dtype)
        temb = self.time_embedding(t_emb)
        tokens = None
        if self.reward is not None:
            temb_reward, tokens = self.reward.embed(reward_scores, feedback_embeds, dtype=dtype)
            temb = temb + temb_reward

        context = encoder_hidden_states.astype(dtype)
        h = self.conv_in(sample.astype(dtype))
        if self.reward is not None:
            h = self.reward.condition_latent(h, tokens)

        def call(block, *args, **kwargs):
            if not self.remat:
                return block(*args, **kwargs)
            return nnx.remat(lambda b, *a: b(*a, **kwargs))(block, *args)

        skips = [h]
        for block in self.down_blocks:
            h, block_skips = call(block, h, temb, context)
            skips.extend(block_skips)
        h = call(self.mid_block, h, temb, context)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            upsample_size = skips[-1].shape[1:3] if skips else None
            h = call(block, h, temb, context, block_skips, upsample_size=upsample_size)
        h = jax.nn.silu(self.conv_norm_out(h))
        return self.conv_out(h)


def build_unet(
    config: UNetConfig | Mapping[str, Any],
    *,
    seed: int = 0,
    dtype: Dtype = None,
    abstract: bool = False,
) -> UNet2DConditionModel:
    """Build a randomly initialised U-Net (or, with ``abstract``, one holding only shapes)."""
    cfg = config if isinstance(config, UNetConfig) else UNetConfig.from_diffusers(config)
    return build_model(UNet2DConditionModel, cfg, seed=seed, dtype=dtype, abstract=abstract)
