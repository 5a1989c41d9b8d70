"""Multi-reward conditioning of the editing U-Net (Gu et al. 2024, Sec. 3.3 and Fig. 3).

Three reward scores ``r`` (instruction following, detail preserving, generation quality; 0..5) and the
pooled text embedding ``f`` of the joined failure-point texts condition the U-Net twice
(official `Unet2DConditionModel.py`; docs/sources.md, "Reward-conditioned U-Net"):

1. *Time embedding*: ``temb += add_embedding(sinusoid(r)) + text_linear2(f)``.
2. *Latent cross-attention* after ``conv_in`` (``proj_deal`` + BERT-style layer ``ca``): the latent
   tokens attend to two condition tokens, ``[add_embedding2(sinusoid(r)), text_linear(f)]``, and the
   result is added back to the ``conv_in`` output.

Sizes derive from the U-Net config (``channels`` = ``block_out_channels[0]``, ``time_embed_dim``,
``text_dim`` = the cross-attention width); SD 1.5 gives the official 320 / 1280 / 768. Attribute names
follow the official checkpoints (``ca.attention.self`` is ``ca.attention.self_attn`` here; ``LayerNorm``
is ``layer_norm``), see ``rewardedit_jax.convert``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rewardedit_jax.models.attention import dot_product_attention
from rewardedit_jax.models.layers import (
    Dtype,
    TimestepEmbedding,
    conv2d,
    dropout,
    gelu_exact,
    group_norm,
    layer_norm,
    linear,
    timestep_embedding,
)

NUM_SCORES = 3
BEST_SCORES = (5.0, 5.0, 5.0)
BEST_FEEDBACK = "None; None; None"


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Hyperparameters of the reward modules (the official values are the defaults)."""

    score_embed_dim: int = 256  # sinusoidal channels per score
    num_heads: int = 8  # heads of the latent cross-attention
    dropout: float = 0.1  # on attention probabilities and dense outputs (training only)
    layer_norm_eps: float = 1e-12
    latent_norm_eps: float = 1e-6


class LatentProjection(nnx.Module):
    """``proj_deal``: GroupNorm and 1x1 conv into tokens, 1x1 conv out of tokens."""

    def __init__(self, channels: int, groups: int, eps: float, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.norm = group_norm(channels, groups, eps, rngs=rngs, dtype=dtype)
        self.proj_in = conv2d(channels, channels, 1, rngs=rngs, dtype=dtype)
        self.proj_out = conv2d(channels, channels, 1, rngs=rngs, dtype=dtype)


class _SelfAttentionProjections(nnx.Module):
    """Query/key/value projections, column-parallel over heads like the U-Net's ``to_q``/``to_k``/``to_v``."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: Dtype):
        self.query = linear(dim, dim, axes=("embed", "heads"), rngs=rngs, dtype=dtype)
        self.key = linear(dim, dim, axes=("embed", "heads"), rngs=rngs, dtype=dtype)
        self.value = linear(dim, dim, axes=("embed", "heads"), rngs=rngs, dtype=dtype)


class _DenseLayerNorm(nnx.Module):
    """``dense`` then ``LayerNorm(dropout(dense(x)) + residual)`` (BERT's output sub-layer).

    ``dense`` is row-parallel: its input axis is ``in_axis``, the output axis of the column-parallel layer
    before it (``heads`` after the attention, ``mlp`` after the intermediate layer), so each tensor shard
    multiplies its own slice of the input and one reduction gives the full-width output.
    """

    def __init__(self, dim: int, eps: float, rate: float, *, in_axis: str, rngs: nnx.Rngs, dtype: Dtype):
        self.dense = linear(dim, dim, axes=(in_axis, "embed"), rngs=rngs, dtype=dtype)
        self.layer_norm = layer_norm(dim, eps, rngs=rngs, dtype=dtype)
        self.dropout = dropout(rate, rngs=rngs)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        return self.layer_norm(self.dropout(self.dense(x)) + residual)


class _Attention(nnx.Module):
    def __init__(self, dim: int, cfg: RewardConfig, *, rngs: nnx.Rngs, dtype: Dtype):
        self.self_attn = _SelfAttentionProjections(dim, rngs=rngs, dtype=dtype)
        self.probs_dropout = dropout(cfg.dropout, rngs=rngs)
        self.output = _DenseLayerNorm(
            dim, cfg.layer_norm_eps, cfg.dropout, in_axis="heads", rngs=rngs, dtype=dtype
        )


class _Intermediate(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: Dtype):
        self.dense = linear(dim, dim, axes=("embed", "mlp"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu_exact(self.dense(x))


class LatentCrossAttention(nnx.Module):
    """``ca``: BERT-style layer; queries are latent tokens, keys/values the two condition tokens."""

    def __init__(self, dim: int, cfg: RewardConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        if dim % cfg.num_heads:
            raise ValueError(f"reward cross-attention width {dim} is not divisible by {cfg.num_heads} heads")
        self.num_heads = cfg.num_heads
        self.attention = _Attention(dim, cfg, rngs=rngs, dtype=dtype)
        self.hidden_intermediate = _Intermediate(dim, rngs=rngs, dtype=dtype)
        self.output = _DenseLayerNorm(
            dim, cfg.layer_norm_eps, cfg.dropout, in_axis="mlp", rngs=rngs, dtype=dtype
        )

    def __call__(self, queries: jax.Array, tokens: jax.Array) -> jax.Array:
        b, lq, d = queries.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        proj = self.attention.self_attn
        q = proj.query(queries).reshape(b, lq, heads, head_dim)
        k = proj.key(tokens).reshape(b, -1, heads, head_dim)
        v = proj.value(tokens).reshape(b, -1, heads, head_dim)
        context = dot_product_attention(q, k, v, probs_dropout=self.attention.probs_dropout).reshape(b, lq, d)
        attended = self.attention.output(context, queries)
        return self.output(self.hidden_intermediate(attended), attended)


class RewardConditioning(nnx.Module):
    """All reward modules of the U-Net; see the module docstring."""

    def __init__(
        self,
        cfg: RewardConfig,
        *,
        channels: int,
        time_embed_dim: int,
        text_dim: int,
        groups: int,
        flip_sin_to_cos: bool,
        freq_shift: float,
        rngs: nnx.Rngs,
        dtype: Dtype = None,
    ):
        self.cfg = cfg
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        scores_dim = NUM_SCORES * cfg.score_embed_dim
        self.add_embedding = TimestepEmbedding(scores_dim, time_embed_dim, rngs=rngs, dtype=dtype)
        self.add_embedding2 = TimestepEmbedding(scores_dim, channels, rngs=rngs, dtype=dtype)
        self.text_linear = linear(text_dim, channels, rngs=rngs, dtype=dtype)
        self.text_linear2 = linear(text_dim, time_embed_dim, rngs=rngs, dtype=dtype)
        self.proj_deal = LatentProjection(channels, groups, cfg.latent_norm_eps, rngs=rngs, dtype=dtype)
        self.ca = LatentCrossAttention(channels, cfg, rngs=rngs, dtype=dtype)

    def embed(
        self, reward_scores: jax.Array, feedback_embeds: jax.Array, *, dtype
    ) -> tuple[jax.Array, jax.Array]:
        """Returns the time-embedding addend (B, T) and the two condition tokens (B, 2, C)."""
        batch = reward_scores.shape[0]
        if reward_scores.shape != (batch, NUM_SCORES):
            raise ValueError(f"reward_scores must be (B, {NUM_SCORES}); got {tuple(reward_scores.shape)}")
        if feedback_embeds.ndim != 2 or feedback_embeds.shape[0] != batch:
            raise ValueError(
                f"feedback_embeds must be (B={batch}, D_text); got {tuple(feedback_embeds.shape)}"
            )
        sinusoid = (
            timestep_embedding(
                reward_scores.reshape(-1),
                self.cfg.score_embed_dim,
                flip_sin_to_cos=self.flip_sin_to_cos,
                downscale_freq_shift=self.freq_shift,
            )
            .reshape(batch, -1)
            .astype(dtype)
        )
        feedback_embeds = feedback_embeds.astype(dtype)
        temb = self.add_embedding(sinusoid) + self.text_linear2(feedback_embeds)
        tokens = jnp.stack([self.add_embedding2(sinusoid), self.text_linear(feedback_embeds)], axis=1)
        return temb, tokens

    def condition_latent(self, h: jax.Array, tokens: jax.Array) -> jax.Array:
        """Latent cross-attention to the condition tokens, added back to ``h`` (B, H, W, C)."""
        b, height, width, c = h.shape
        x = self.proj_deal.proj_in(self.proj_deal.norm(h)).reshape(b, height * width, c)
        x = self.ca(x, tokens.astype(x.dtype)).reshape(b, height, width, c)
        return self.proj_deal.proj_out(x) + h
