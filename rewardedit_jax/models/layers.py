"""Shared Flax NNX building blocks of the Stable Diffusion models (U-Net, VAE, text encoder).

Every parameter carries *logical* axis names (``out_sharding`` metadata, not applied eagerly); the
training config's rule table maps them to the mesh axes ``data``, ``fsdp`` and ``tensor``. Logical names:

- ``embed``: a layer's input feature axis (model width), ``mlp``/``heads``: its output feature axis,
- ``conv_in``/``conv_out``: a convolution kernel's input/output channel axes,
- ``norm``: scale/bias vectors of normalization layers, ``vocab``/``positions``: embedding tables.

Layouts are NHWC. Module attribute names follow diffusers/transformers so that the weight conversion
(``rewardedit_jax.convert``) is a mechanical rename plus transposes.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = jnp.dtype | None


class UnsupportedConfigError(ValueError):
    """A model config uses a feature this implementation does not model (the message names the key)."""


def check_config_keys(
    config: Mapping[str, Any],
    *,
    what: str,
    known: Collection[str],
    fixed: Mapping[str, Any] = {},  # noqa: B006  (read only)
    ignored: Collection[str] = (),
) -> None:
    """Refuse the keys of a diffusers/transformers config dict that this implementation does not model.

    ``known`` keys pass (the caller validates their values); a ``fixed`` key passes only with its one
    supported value, or one of the values in a ``set`` given for it; keys starting with ``_`` (diffusers'
    bookkeeping) and ``ignored`` keys pass; any other key is an error naming the model (``what``)."""
    for key, value in config.items():
        if key.startswith("_") or key in ignored:
            continue
        if key in fixed:
            allowed = fixed[key]
            choices = allowed if isinstance(allowed, (set, frozenset)) else (allowed,)
            ok = any(value == choice for choice in choices)
            if not ok:
                only = " or ".join(sorted(map(repr, choices)))
                raise UnsupportedConfigError(
                    f"unsupported {what} config key {key!r}={value!r} (only {only} is supported)"
                )
        elif key not in known:
            raise UnsupportedConfigError(f"unknown {what} config key {key!r}={value!r}")


def logical(*names: str | None) -> dict:
    """Variable metadata that records logical axis names without sharding the value at creation."""
    return {"out_sharding": tuple(names), "eager_sharding": False}


@contextlib.contextmanager
def _cheap_tracer_errors():
    # Every RNG draw while tracing makes flax probe ``tracer.sharding``; jax answers with an
    # AttributeError whose message walks the whole trace so far, which makes building an abstract
    # model quadratic in its number of layers (minutes for a deep U-Net). The message is discarded
    # (``getattr`` with a default), so it is skipped while an abstract model is built.
    from jax._src.interpreters import partial_eval

    tracer = getattr(partial_eval, "DynamicJaxprTracer", None)
    original = getattr(tracer, "_origin_msg", None)
    if original is None:
        yield
        return
    tracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        tracer._origin_msg = original


def abstract_module(build):
    """``nnx.eval_shape(build)``: the module ``build()`` returns, holding only shapes and dtypes."""
    with _cheap_tracer_errors():
        return nnx.eval_shape(build)


def build_model(model_class, cfg, *, seed: int = 0, dtype: Dtype = None, abstract: bool = False):
    """``model_class(cfg, rngs=, dtype=)`` randomly initialised from ``seed`` (or, with ``abstract``,
    holding only shapes)."""

    def build():
        return model_class(cfg, rngs=nnx.Rngs(seed), dtype=dtype)

    return abstract_module(build) if abstract else build()


def linear(
    in_features: int,
    out_features: int,
    *,
    rngs: nnx.Rngs,
    use_bias: bool = True,
    axes: tuple[str | None, str | None] = ("embed", "mlp"),
    dtype: Dtype = None,
) -> nnx.Linear:
    """A dense layer (kernel ``(in, out)``) with logical axis names."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        rngs=rngs,
        kernel_metadata=logical(*axes),
        bias_metadata=logical(axes[1]),
    )


def conv2d(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: int | Sequence[tuple[int, int]] | None = None,
    dtype: Dtype = None,
) -> nnx.Conv:
    """A 2D convolution over NHWC input with PyTorch-style symmetric integer padding."""
    if padding is None:
        padding = (kernel_size - 1) // 2
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nnx.Conv(
        in_features,
        out_features,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=tuple(padding),
        dtype=dtype,
        rngs=rngs,
        kernel_metadata=logical(None, None, "conv_in", "conv_out"),
        bias_metadata=logical("conv_out"),
    )


class ScopedChoice(threading.local):
    """A per-thread choice (an implementation name) that a context manager sets for the models traced
    inside it; ``default`` outside any such context."""

    def __init__(self, default: str):
        self.value = default

    @contextlib.contextmanager
    def scoped(self, value: str):
        previous, self.value = self.value, value
        try:
            yield
        finally:
            self.value = previous


GROUP_NORM_IMPLEMENTATIONS = ("flax", "channel_sums")
_GROUP_NORM = ScopedChoice("flax")


def get_group_norm_implementation() -> str:
    """The GroupNorm computation in effect: ``flax`` unless :func:`group_norm_implementation` selects
    another."""
    return _GROUP_NORM.value


@contextlib.contextmanager
def group_norm_implementation(name: str):
    """Select how :class:`GroupNorm` computes its statistics for models traced inside this context.

    ``flax`` (the default): ``nnx.GroupNorm``, statistics over the grouped view ``(B, H, W, G, C/G)``.
    ``channel_sums``: the same two-pass float32 statistics, reduced over the spatial axis of
    ``(B, H*W, C)`` per channel first (a plain column reduction, no regrouped layout) and combined within
    each group on the small ``(B, C)`` sums; the normalization multiplies the centred input by per-(B, C)
    coefficients. Same function, a different XLA graph: a GPU lever to measure (``benchmarks/NOTES.md``).
    """
    if name not in GROUP_NORM_IMPLEMENTATIONS:
        raise ValueError(f"GroupNorm implementation {name!r} is not one of {GROUP_NORM_IMPLEMENTATIONS}")
    with _GROUP_NORM.scoped(name):
        yield


def group_norm_channel_sums(
    x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, num_groups: int, eps: float, dtype
) -> jax.Array:
    """GroupNorm of NHWC (or any ``(B, ..., C)``) ``x`` through per-channel spatial sums in float32
    (two-pass variance), returned in ``dtype`` (default: ``x``'s)."""
    out_dtype = dtype or jnp.result_type(x, *(v for v in (scale, bias) if v is not None))
    b, c = x.shape[0], x.shape[-1]
    group = c // num_groups
    flat = x.reshape(b, -1, c)
    count = flat.shape[1] * group

    def per_group(channel_sums):  # (B, C) -> (B, C): each channel gets its group's total
        totals = channel_sums.reshape(b, num_groups, group).sum(-1)
        return jnp.repeat(totals, group, axis=1)

    mean = per_group(jnp.sum(flat, axis=1, dtype=jnp.float32)) / count
    centred = flat.astype(jnp.float32) - mean[:, None, :]
    var = per_group(jnp.sum(centred * centred, axis=1)) / count
    mul = jax.lax.rsqrt(var + eps)
    if scale is not None:
        mul = mul * scale.astype(jnp.float32)
    y = centred * mul[:, None, :]
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(out_dtype).reshape(x.shape)


class GroupNorm(nnx.GroupNorm):
    """``nnx.GroupNorm`` (same parameters, same function) whose computation
    :func:`group_norm_implementation` selects."""

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        if get_group_norm_implementation() == "flax" or mask is not None or self.reduction_axes is not None:
            return super().__call__(x, mask=mask)
        scale = self.scale[...] if self.scale else None
        bias = self.bias[...] if self.bias else None
        x, scale, bias = self.promote_dtype((x, scale, bias), dtype=self.dtype)
        return group_norm_channel_sums(x, scale, bias, self.num_groups, self.epsilon, self.dtype)


def _norm(norm_class, num_features: int, eps: float, rngs: nnx.Rngs, dtype: Dtype, **kwargs):
    # Two-pass variance like PyTorch: the one-pass E[x^2] - E[x]^2 cancels badly when the mean is large.
    return norm_class(
        num_features,
        epsilon=eps,
        dtype=dtype,
        use_fast_variance=False,
        rngs=rngs,
        scale_metadata=logical("norm"),
        bias_metadata=logical("norm"),
        **kwargs,
    )


def group_norm(num_channels: int, num_groups: int, eps: float, *, rngs: nnx.Rngs, dtype: Dtype = None):
    """GroupNorm over the channel axis of NHWC input (statistics in float32, two-pass variance)."""
    if num_channels % num_groups:
        raise ValueError(f"GroupNorm: {num_channels} channels are not divisible into {num_groups} groups")
    return _norm(GroupNorm, num_channels, eps, rngs, dtype, num_groups=num_groups)


def layer_norm(num_features: int, eps: float, *, rngs: nnx.Rngs, dtype: Dtype = None) -> nnx.LayerNorm:
    """LayerNorm over the last axis (two-pass variance, like PyTorch)."""
    return _norm(nnx.LayerNorm, num_features, eps, rngs, dtype)


def dropout(rate: float, *, rngs: nnx.Rngs) -> nnx.Dropout:
    """Dropout that starts in inference mode (deterministic); ``model.train()`` switches it on.

    A zero rate (SD 1.5's U-Net and VAE) keeps no random stream: nothing would draw from it, and each one
    forked while tracing an abstract model costs time that grows with the model (minutes for a deep one).
    """
    return nnx.Dropout(rate, deterministic=True, rngs=rngs if rate > 0 else None)


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    *,
    flip_sin_to_cos: bool,
    downscale_freq_shift: float,
    max_period: float = 10000.0,
    scale: float = 1.0,
) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps, (N,) -> (N, dim), float32.

    The DDPM/diffusers convention: frequencies ``exp(-log(max_period) * i / (half - shift))``,
    ``[sin, cos]`` halves, swapped to ``[cos, sin]`` when ``flip_sin_to_cos``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - downscale_freq_shift)
    args = scale * timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """Two-layer MLP ``linear_1 -> SiLU -> linear_2`` that lifts a sinusoidal embedding."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.linear_1 = linear(in_features, out_features, rngs=rngs, dtype=dtype)
        self.linear_2 = linear(out_features, out_features, rngs=rngs, axes=("mlp", "embed"), dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the erf formulation (PyTorch's default ``approximate='none'``)."""
    return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
}


def get_activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r} (supported: {sorted(ACTIVATIONS)})") from None


def count_params(module: nnx.Module) -> int:
    """Number of scalar parameters (``nnx.Param``) of a module, concrete or abstract."""
    return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def fill_random_(module: nnx.Module, seed: int = 0) -> nnx.Module:
    """Fill the parameters of a (possibly abstract) module with random values, fast, using NumPy.

    Kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 0.02^2), norm scales 1, biases 0. For benchmarks and
    shape checks of full-size models, where JAX's truncated-normal initializers take minutes on a CPU.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        shape, dtype, leaf = var.get_value().shape, var.get_value().dtype, str(path[-1])
        if leaf == "kernel":
            fan_in = int(math.prod(shape[:-1]))
            value = rng.standard_normal(shape, dtype=np.float32) / math.sqrt(max(fan_in, 1))
        elif leaf == "embedding":
            value = rng.standard_normal(shape, dtype=np.float32) * 0.02
        elif leaf == "scale":
            value = np.ones(shape, np.float32)
        else:
            value = np.zeros(shape, np.float32)
        var.set_value(jnp.asarray(value, dtype=dtype))
    materialize_rng_state(module, seed)
    return module


def materialize_rng_state(model: nnx.Module, seed: int = 0) -> None:
    """Give concrete values to the RNG state (dropout streams) of a model built with ``nnx.eval_shape``."""
    key = jax.random.key(seed)
    for i, (_, var) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.RngState))):
        if isinstance(var.get_value(), jax.ShapeDtypeStruct):
            if isinstance(var, nnx.RngKey):
                var.set_value(jax.random.fold_in(key, i))
            else:
                var.set_value(jnp.zeros(var.get_value().shape, var.get_value().dtype))
