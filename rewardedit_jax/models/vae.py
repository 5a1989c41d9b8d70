"""The Stable Diffusion VAE (``AutoencoderKL``, Rombach et al. 2022) in Flax NNX.

The frozen autoencoder of the editing model (docs/sources.md, "Training recipe"): the edited image is
encoded to a posterior *sample*, the source image to the posterior *mode*, and generated latents are
decoded back to
pixels. :class:`VAEConfig` is read from a diffusers ``vae/config.json``; any key this implementation does
not model, set to a non-default value, is an error naming the key. The module tree mirrors diffusers'
``AutoencoderKL`` attribute names (``encoder.down_blocks.0.resnets.0.conv1``,
``encoder.mid_block.attentions.0.to_q``, ``quant_conv``, ...), so weights convert by renaming.

Layout is NHWC: ``encode`` takes images (B, H, W, C) in [-1, 1] and returns the posterior
``(mean, logvar)``, each (B, H/f, W/f, latent_channels) and *unscaled*; ``decode`` takes unscaled latents.
Multiply by :attr:`AutoencoderKL.scaling_factor` to get the diffusion model's latent scale.
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
    UnsupportedConfigError,
    build_model,
    check_config_keys,
    conv2d,
    group_norm,
)
from rewardedit_jax.models.unet import Downsample2D, ResnetBlock2D, Upsample2D

DOWN_BLOCK_TYPE = "DownEncoderBlock2D"
UP_BLOCK_TYPE = "UpDecoderBlock2D"
NORM_EPS = 1e-6  # diffusers' Encoder/Decoder use this epsilon for every GroupNorm
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps the log-variance

# diffusers AutoencoderKL keys that must keep their default value here (key -> default).
_FIXED_DEFAULTS: dict[str, Any] = {
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
}
# Keys whose value does not change the computation of encode/decode.
_IGNORED = {"sample_size", "force_upcast"}
_ACTIVATIONS = ("silu", "swish")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The architecture of a KL autoencoder, normalized from a diffusers config (diffusers' defaults)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> VAEConfig:
        """Validate and normalize a diffusers ``AutoencoderKL`` config dict."""
        fixed = {**_FIXED_DEFAULTS, "act_fn": set(_ACTIVATIONS)}
        check_config_keys(config, what="VAE", known=_KNOWN_KEYS, fixed=fixed, ignored=_IGNORED)
        channels = tuple(int(c) for c in config.get("block_out_channels", cls.block_out_channels))
        for key, allowed in (("down_block_types", DOWN_BLOCK_TYPE), ("up_block_types", UP_BLOCK_TYPE)):
            types = tuple(config.get(key, (allowed,)))
            for t in types:
                if t != allowed:
                    raise UnsupportedConfigError(
                        f"unsupported VAE config key {key!r}: block type {t!r} (only {allowed!r})"
                    )
            if len(types) != len(channels):
                raise UnsupportedConfigError(
                    f"VAE config key {key!r} has {len(types)} blocks for {len(channels)} block_out_channels"
                )
        groups = config.get("norm_num_groups", cls.norm_num_groups)
        if groups is None:
            raise UnsupportedConfigError("unsupported VAE config key 'norm_num_groups'=None")
        for c in channels:
            if c % int(groups):
                raise UnsupportedConfigError(
                    f"VAE block width {c} is not divisible by norm_num_groups={groups}"
                )
        lpb = config.get("layers_per_block", cls.layers_per_block)
        if not isinstance(lpb, int):
            raise UnsupportedConfigError(
                f"unsupported VAE config key 'layers_per_block'={lpb!r} (an integer)"
            )
        return cls(
            in_channels=int(config.get("in_channels", cls.in_channels)),
            out_channels=int(config.get("out_channels", cls.out_channels)),
            block_out_channels=channels,
            layers_per_block=lpb,
            latent_channels=int(config.get("latent_channels", cls.latent_channels)),
            norm_num_groups=int(groups),
            scaling_factor=float(config.get("scaling_factor", cls.scaling_factor)),
            use_quant_conv=bool(config.get("use_quant_conv", True)),
            use_post_quant_conv=bool(config.get("use_post_quant_conv", True)),
            mid_block_add_attention=bool(config.get("mid_block_add_attention", True)),
        )


_KNOWN_KEYS = {f.name for f in dataclasses.fields(VAEConfig)} | {"down_block_types", "up_block_types"}


class SpatialSelfAttention(Attention):
    """The VAE mid-block attention: GroupNorm, one head of full width over all pixels, residual.

    diffusers builds it as ``Attention(heads=1, dim_head=C, bias=True, norm_num_groups=G,
    residual_connection=True, upcast_softmax=True)``; the names (``group_norm``, ``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``) are its state-dict names. Scores are computed in float32.
    """

    def __init__(self, channels: int, *, groups: int, rngs: nnx.Rngs, dtype: Dtype = None):
        super().__init__(
            channels, heads=1, head_dim=channels, qkv_bias=True, upcast=True, rngs=rngs, dtype=dtype
        )
        self.group_norm = group_norm(channels, groups, NORM_EPS, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:  # type: ignore[override]
        b, h, w, c = x.shape
        tokens = self.group_norm(x).reshape(b, h * w, c)
        return super().__call__(tokens).reshape(b, h, w, c) + x


class UNetMidBlock2D(nnx.Module):
    """``resnets.0``, (``attentions.0``), ``resnets.1`` at the lowest resolution."""

    def __init__(
        self, channels: int, *, groups: int, add_attention: bool, rngs: nnx.Rngs, dtype: Dtype = None
    ):
        self.resnets = nnx.List(
            [
                ResnetBlock2D(channels, channels, None, groups=groups, eps=NORM_EPS, rngs=rngs, dtype=dtype)
                for _ in range(2)
            ]
        )
        self.attentions = (
            nnx.List([SpatialSelfAttention(channels, groups=groups, rngs=rngs, dtype=dtype)])
            if add_attention
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


def _resnet_stack(in_channels: int, out_channels: int, num_layers: int, groups: int, rngs, dtype) -> nnx.List:
    """``num_layers`` resnet blocks without a time embedding, the first taking ``in_channels``."""
    return nnx.List(
        [
            ResnetBlock2D(
                in_channels if i == 0 else out_channels,
                out_channels,
                None,
                eps=NORM_EPS,
                groups=groups,
                rngs=rngs,
                dtype=dtype,
            )
            for i in range(num_layers)
        ]
    )


class _ResamplingBlock(nnx.Module):
    """Resnets without a time embedding, then an optional resampler.

    A subclass names the attribute holding the resampler (like diffusers, a one-element list) in
    ``RESAMPLERS`` and builds it in its static ``resampler(channels, rngs=, dtype=)``.
    """

    RESAMPLERS: str

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        groups: int,
        resample: bool,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        self.resnets = _resnet_stack(in_channels, out_channels, num_layers, groups, rngs, dtype)
        resamplers = nnx.List([self.resampler(out_channels, rngs=rngs, dtype=dtype)]) if resample else None
        setattr(self, self.RESAMPLERS, resamplers)

    @classmethod
    def chain(cls, channels, num_layers: int, groups: int, rngs: nnx.Rngs, dtype: Dtype) -> nnx.List:
        """One block per entry of ``channels`` (its output width), each but the last resampling."""
        return nnx.List(
            [
                cls(
                    channels[max(i - 1, 0)],
                    channels[i],
                    num_layers=num_layers,
                    groups=groups,
                    resample=i < len(channels) - 1,
                    rngs=rngs,
                    dtype=dtype,
                )
                for i in range(len(channels))
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        resamplers = getattr(self, self.RESAMPLERS)
        return x if resamplers is None else resamplers[0](x)


class DownEncoderBlock2D(_ResamplingBlock):
    RESAMPLERS = "downsamplers"

    @staticmethod
    def resampler(channels: int, *, rngs: nnx.Rngs, dtype: Dtype) -> nnx.Module:
        # The encoder downsamples with padding 0: an asymmetric (0, 1) pad, then a stride-2 3x3 conv.
        return Downsample2D(channels, 0, rngs=rngs, dtype=dtype)


class UpDecoderBlock2D(_ResamplingBlock):
    RESAMPLERS = "upsamplers"

    @staticmethod
    def resampler(channels: int, *, rngs: nnx.Rngs, dtype: Dtype) -> nnx.Module:
        return Upsample2D(channels, rngs=rngs, dtype=dtype)


class Encoder(nnx.Module):
    """Image (B, H, W, C) -> posterior moments (B, H/f, W/f, 2 * latent_channels)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        channels = cfg.block_out_channels
        groups = cfg.norm_num_groups
        self.conv_in = conv2d(cfg.in_channels, channels[0], 3, rngs=rngs, dtype=dtype)
        self.down_blocks = DownEncoderBlock2D.chain(channels, cfg.layers_per_block, groups, rngs, dtype)
        self.mid_block = UNetMidBlock2D(
            channels[-1], groups=groups, add_attention=cfg.mid_block_add_attention, rngs=rngs, dtype=dtype
        )
        self.conv_norm_out = group_norm(channels[-1], groups, NORM_EPS, rngs=rngs, dtype=dtype)
        self.conv_out = conv2d(channels[-1], 2 * cfg.latent_channels, 3, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """Latents (B, h, w, latent_channels) -> image (B, h*f, w*f, C)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        rev = cfg.block_out_channels[::-1]
        groups = cfg.norm_num_groups
        self.conv_in = conv2d(cfg.latent_channels, rev[0], 3, rngs=rngs, dtype=dtype)
        self.mid_block = UNetMidBlock2D(
            rev[0], groups=groups, add_attention=cfg.mid_block_add_attention, rngs=rngs, dtype=dtype
        )
        self.up_blocks = UpDecoderBlock2D.chain(rev, cfg.layers_per_block + 1, groups, rngs, dtype)
        self.conv_norm_out = group_norm(rev[-1], groups, NORM_EPS, rngs=rngs, dtype=dtype)
        self.conv_out = conv2d(rev[-1], cfg.out_channels, 3, rngs=rngs, dtype=dtype)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """The KL autoencoder: ``encode(images) -> (mean, logvar)``, ``decode(latents) -> images``.

    Latents are unscaled (multiply by ``scaling_factor`` before the diffusion model, divide before
    ``decode``). ``dtype`` is the activation (compute) dtype; parameters keep their own dtype.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.config = cfg
        self.dtype = dtype
        self.scaling_factor = cfg.scaling_factor
        self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype)
        self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype)
        latent = cfg.latent_channels
        self.quant_conv = (
            conv2d(2 * latent, 2 * latent, 1, rngs=rngs, dtype=dtype) if cfg.use_quant_conv else None
        )
        self.post_quant_conv = (
            conv2d(latent, latent, 1, rngs=rngs, dtype=dtype) if cfg.use_post_quant_conv else None
        )

    def _check(self, x: jax.Array, channels: int, name: str) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"{name} must be NHWC (B, H, W, {channels}); got shape {tuple(x.shape)}")

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images (B, H, W, C) in [-1, 1] -> posterior ``(mean, logvar)``; logvar clipped to [-30, 20]."""
        self._check(images, self.config.in_channels, "images")
        f = self.config.downsample_factor
        if images.shape[1] % f or images.shape[2] % f:
            raise ValueError(
                f"image height and width must be multiples of {f}; got {tuple(images.shape[1:3])}"
            )
        moments = self.encoder(images.astype(self.dtype or images.dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Unscaled latents (B, h, w, latent_channels) -> images (B, h*f, w*f, C), nominally in [-1, 1]."""
        self._check(latents, self.config.latent_channels, "latents")
        z = latents.astype(self.dtype or latents.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    @staticmethod
    def sample(mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
        """A posterior sample ``mean + exp(logvar / 2) * eps`` (noise drawn in float32)."""
        eps = jax.random.normal(key, mean.shape, jnp.float32)
        std = jnp.exp(0.5 * logvar.astype(jnp.float32))
        return (mean.astype(jnp.float32) + std * eps).astype(mean.dtype)

    @staticmethod
    def mode(mean: jax.Array, logvar: jax.Array | None = None) -> jax.Array:
        """The posterior mode (its mean)."""
        return mean


IDENTITY_CLASS = "IdentityAutoencoder"


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """Pixel-space stand-in for the VAE: latents are the images themselves."""

    in_channels: int = 3
    scaling_factor: float = 1.0

    @property
    def latent_channels(self) -> int:
        return self.in_channels

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def downsample_factor(self) -> int:
        return 1


class IdentityAutoencoder(nnx.Module):
    """``encode(x) -> (x, logvar=-30)``, ``decode(z) -> z``: diffusion in pixel space, for tiny CPU-sized
    models (the offline demo) where a trained VAE is not available. Config ``{"_class_name":
    "IdentityAutoencoder", "in_channels": 3}``; no parameters. Its PyTorch twin is in ``torch_compat``.
    """

    def __init__(self, cfg: IdentityConfig | None = None, *, dtype: Dtype = None, **unused):
        self.config = cfg or IdentityConfig()
        self.dtype = dtype
        self.scaling_factor = self.config.scaling_factor

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        images = images.astype(self.dtype or images.dtype)
        return images, jnp.full_like(images, LOGVAR_RANGE[0])

    def decode(self, latents: jax.Array) -> jax.Array:
        return latents

    sample = staticmethod(AutoencoderKL.sample)
    mode = staticmethod(AutoencoderKL.mode)


def is_identity_config(config: Mapping[str, Any]) -> bool:
    return config.get("_class_name") == IDENTITY_CLASS


def build_vae(
    config: VAEConfig | Mapping[str, Any], *, seed: int = 0, dtype: Dtype = None, abstract: bool = False
) -> AutoencoderKL:
    """Build a randomly initialised VAE (or, with ``abstract``, one holding only shapes)."""
    if isinstance(config, Mapping) and is_identity_config(config):
        return IdentityAutoencoder(IdentityConfig(int(config.get("in_channels", 3))), dtype=dtype)
    cfg = config if isinstance(config, VAEConfig) else VAEConfig.from_diffusers(config)
    return build_model(AutoencoderKL, cfg, seed=seed, dtype=dtype, abstract=abstract)
