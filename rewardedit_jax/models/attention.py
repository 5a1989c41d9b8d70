"""The one attention function every model goes through, and the multi-head attention layer.

All attention in the U-Net, the VAE and the text encoder calls :func:`dot_product_attention`, so the
implementation (XLA, cuDNN flash attention, a Pallas kernel) is chosen in one place. Layout is
``(batch, length, heads, head_dim)``.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from rewardedit_jax.models.layers import Dtype, ScopedChoice, linear

_STATE = ScopedChoice("auto")
IMPLEMENTATIONS = ("xla", "cudnn", "auto", "auto_padded")
# cuDNN's fused attention takes key lengths in multiples of this
# (docs/sources.md, "cuDNN attention limits": KV 77 refused).
CUDNN_KEY_MULTIPLE = 64


def get_attention_implementation() -> str:
    """The implementation in effect: ``auto`` unless :func:`attention_implementation` selects another."""
    return _STATE.value


@contextlib.contextmanager
def attention_implementation(name: str):
    """Select the attention implementation for models traced inside this context.

    ``xla`` (portable), ``cudnn`` (fused flash attention, GPU only), ``auto`` (the default: cuDNN where
    the backend and shapes allow it, XLA otherwise, so CPU and TPU run XLA) or ``auto_padded`` (as
    ``auto``, and keys of other lengths, such as the 77 text tokens of cross-attention, are zero-padded
    to a multiple of 64 and masked by length so that cuDNN takes them too; a GPU lever to measure, see
    ``benchmarks/NOTES.md``).
    """
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {name!r} is not one of {IMPLEMENTATIONS}")
    with _STATE.scoped(name):
        yield


def _cudnn_supported(query: jax.Array, key: jax.Array, *, any_key_length: bool = False) -> bool:
    if jax.default_backend() != "gpu" or query.dtype not in (jnp.bfloat16, jnp.float16):
        return False
    head_dim = query.shape[-1]
    key_ok = any_key_length or key.shape[1] % CUDNN_KEY_MULTIPLE == 0
    return head_dim % 8 == 0 and head_dim <= 256 and key_ok


def padded_key_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    implementation: str,
    multiple: int = CUDNN_KEY_MULTIPLE,
) -> jax.Array:
    """Attention with the keys and values zero-padded to a multiple of ``multiple`` in length and the
    padding masked out by ``key_value_seq_lengths``: the same result as unpadded attention."""
    length = key.shape[1]
    pad = -length % multiple
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        key, value = jnp.pad(key, widths), jnp.pad(value, widths)
    lengths = jnp.full((query.shape[0],), length, jnp.int32)
    return jax.nn.dot_product_attention(
        query, key, value, key_value_seq_lengths=lengths, implementation=implementation
    )


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    upcast: bool = False,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    is_causal: bool = False,
    probs_dropout: nnx.Dropout | None = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(d) [+ bias]) v over (B, L, H, D) inputs.

    ``upcast`` computes scores and softmax in float32 (diffusers' ``upcast_attention``). A dropout layer
    on the probabilities (training of the reward block) takes the explicit path.
    """
    dtype = query.dtype
    if upcast:
        query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    if probs_dropout is not None and not probs_dropout.deterministic:
        scale = query.shape[-1] ** -0.5
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) * scale
        if bias is not None:
            scores = scores + bias
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        probs = probs_dropout(jax.nn.softmax(scores.astype(jnp.float32), axis=-1)).astype(value.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, value).astype(dtype)
    implementation = get_attention_implementation()
    value = value.astype(query.dtype)
    if implementation == "auto_padded":
        plain = bias is None and mask is None and not is_causal
        if plain and key.shape[1] % CUDNN_KEY_MULTIPLE and _cudnn_supported(query, key, any_key_length=True):
            return padded_key_attention(query, key, value, implementation="cudnn").astype(dtype)
        implementation = "auto"
    if implementation == "auto":
        implementation = "cudnn" if bias is None and _cudnn_supported(query, key) else "xla"
    out = jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, is_causal=is_causal, implementation=implementation
    )
    return out.astype(dtype)


class Attention(nnx.Module):
    """diffusers-style multi-head attention: ``to_q``, ``to_k``, ``to_v`` (no bias), ``to_out.0``.

    Self-attention when ``context`` is None, cross-attention to ``context`` otherwise.
    """

    def __init__(
        self,
        query_dim: int,
        *,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
        upcast: bool = False,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads, self.head_dim, self.upcast = heads, head_dim, upcast
        self.to_q = linear(
            query_dim, inner, use_bias=qkv_bias, axes=("embed", "heads"), rngs=rngs, dtype=dtype
        )
        self.to_k = linear(
            context_dim, inner, use_bias=qkv_bias, axes=("embed", "heads"), rngs=rngs, dtype=dtype
        )
        self.to_v = linear(
            context_dim, inner, use_bias=qkv_bias, axes=("embed", "heads"), rngs=rngs, dtype=dtype
        )
        self.to_out = nnx.List([linear(inner, query_dim, axes=("heads", "embed"), rngs=rngs, dtype=dtype)])

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        b = x.shape[0]
        q = self.to_q(x).reshape(b, -1, self.heads, self.head_dim)
        k = self.to_k(context).reshape(b, -1, self.heads, self.head_dim)
        v = self.to_v(context).reshape(b, -1, self.heads, self.head_dim)
        out = dot_product_attention(q, k, v, upcast=self.upcast)
        return self.to_out[0](out.reshape(b, -1, self.heads * self.head_dim))
