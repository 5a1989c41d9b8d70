"""The CLIP text transformer (Radford et al. 2021) in Flax NNX: Stable Diffusion's frozen text encoder.

It encodes the edit instruction (per-token hidden states, the U-Net's cross-attention context) and the
joined feedback texts of the reward conditioning (the *pooled* output: the final-layer-norm hidden state
at the end-of-text position; Gu et al. 2024, Sec. 3.3; docs/sources.md, "Text encoder and tokenizer").

:class:`TextEncoderConfig` is read from a transformers ``text_encoder/config.json``; keys that would change
the computation and are not modelled here are errors naming the key. Module attribute names mirror
transformers' ``CLIPTextModel`` (``embeddings.token_embedding``, ``encoder.layers.N.self_attn.q_proj``,
``final_layer_norm``), so weights convert by renaming.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rewardedit_jax.models.attention import dot_product_attention
from rewardedit_jax.models.layers import (
    ACTIVATIONS,
    Dtype,
    UnsupportedConfigError,
    build_model,
    check_config_keys,
    get_activation,
    layer_norm,
    linear,
    logical,
)

LEGACY_EOS_TOKEN_ID = 2  # transformers' pre-#24773 CLIP configs: pool at argmax(input_ids) instead

# transformers ACT2FN names whose function rewardedit_jax.models.layers.ACTIVATIONS reproduces exactly.
SUPPORTED_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
# transformers CLIPTextConfig / PretrainedConfig keys that must keep their default value here.
_FIXED_DEFAULTS: dict[str, Any] = {"pruned_heads": {}, "is_decoder": False, "add_cross_attention": False}
# Keys that do not change the inference computation: bookkeeping, training-only (dropout, init), the
# unused projection width, token ids other than end-of-text, and transformers 4.x generation defaults.
_IGNORED = {
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "projection_dim",
    "initializer_range",
    "initializer_factor",
    "dropout",
    "attention_dropout",
    "hidden_dropout",
    "bos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "use_bfloat16",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "tf_legacy_loss",
    "use_cache",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
}


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """The architecture of a CLIP text transformer (defaults: transformers' ``CLIPTextConfig``)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any]) -> TextEncoderConfig:
        """Validate and normalize a transformers ``CLIPTextConfig`` dict (a ``text_encoder/config.json``)."""
        check_config_keys(
            config, what="text encoder", known=_KNOWN_KEYS, fixed=_FIXED_DEFAULTS, ignored=_IGNORED
        )
        act = config.get("hidden_act", cls.hidden_act)
        if act not in SUPPORTED_ACTIVATIONS or act not in ACTIVATIONS:
            raise UnsupportedConfigError(
                f"unsupported text encoder config key 'hidden_act'={act!r} "
                f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        eos = config.get("eos_token_id", cls.eos_token_id)
        if not isinstance(eos, int) or isinstance(eos, bool):
            raise UnsupportedConfigError(
                f"unsupported text encoder config key 'eos_token_id'={eos!r} (an integer)"
            )
        cfg = cls(
            vocab_size=int(config.get("vocab_size", cls.vocab_size)),
            hidden_size=int(config.get("hidden_size", cls.hidden_size)),
            intermediate_size=int(config.get("intermediate_size", cls.intermediate_size)),
            num_hidden_layers=int(config.get("num_hidden_layers", cls.num_hidden_layers)),
            num_attention_heads=int(config.get("num_attention_heads", cls.num_attention_heads)),
            max_position_embeddings=int(config.get("max_position_embeddings", cls.max_position_embeddings)),
            hidden_act=act,
            layer_norm_eps=float(config.get("layer_norm_eps", cls.layer_norm_eps)),
            eos_token_id=eos,
        )
        if cfg.hidden_size % cfg.num_attention_heads:
            raise UnsupportedConfigError(
                f"text encoder hidden_size {cfg.hidden_size} is not divisible by "
                f"{cfg.num_attention_heads} attention heads"
            )
        return cfg


_KNOWN_KEYS = {f.name for f in dataclasses.fields(TextEncoderConfig)}


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        def embed(rows: int, axis: str) -> nnx.Embed:
            return nnx.Embed(
                rows,
                cfg.hidden_size,
                dtype=dtype,
                embedding_init=nnx.initializers.normal(0.02),
                embedding_metadata=logical(axis, "embed"),
                rngs=rngs,
            )

        self.token_embedding = embed(cfg.vocab_size, "vocab")
        self.position_embedding = embed(cfg.max_position_embeddings, "positions")

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPAttention(nnx.Module):
    """Causal multi-head self-attention with biased ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``."""

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        d = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.q_proj = linear(d, d, axes=("embed", "heads"), rngs=rngs, dtype=dtype)
        self.k_proj = linear(d, d, axes=("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v_proj = linear(d, d, axes=("embed", "heads"), rngs=rngs, dtype=dtype)
        self.out_proj = linear(d, d, axes=("heads", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        split = (b, length, self.heads, self.head_dim)
        q, k, v = (proj(x).reshape(split) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.reshape(b, length, self.heads * self.head_dim))


class CLIPMLP(nnx.Module):
    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.activation = get_activation(cfg.hidden_act)
        self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs, dtype=dtype)
        self.fc2 = linear(
            cfg.intermediate_size, cfg.hidden_size, axes=("mlp", "embed"), rngs=rngs, dtype=dtype
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-norm transformer layer: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.self_attn = CLIPAttention(cfg, rngs=rngs, dtype=dtype)
        self.layer_norm1 = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.mlp = CLIPMLP(cfg, rngs=rngs, dtype=dtype)
        self.layer_norm2 = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.layers = nnx.List(
            [CLIPEncoderLayer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPTextModel(nnx.Module):
    """``text_encoder(input_ids) -> (last_hidden_state (B, L, D), pooled (B, D))``.

    ``last_hidden_state`` is after the final layer norm (what Stable Diffusion uses as cross-attention
    context). ``pooled`` is ``last_hidden_state`` at the end-of-text position, found as transformers does
    for this config: the first position holding ``eos_token_id``, or, for legacy configs with
    ``eos_token_id == 2``, the position of the largest token id. ``dtype`` is the compute dtype.
    """

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.config = cfg
        self.dtype = dtype
        self.embeddings = CLIPTextEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.encoder = CLIPEncoder(cfg, rngs=rngs, dtype=dtype)
        self.final_layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)

    def end_of_text_positions(self, input_ids: jax.Array) -> jax.Array:
        """(B,) index of the token whose hidden state is pooled."""
        ids = input_ids.astype(jnp.int32)
        if self.config.eos_token_id == LEGACY_EOS_TOKEN_ID:
            return jnp.argmax(ids, axis=-1)
        return jnp.argmax((ids == self.config.eos_token_id).astype(jnp.int32), axis=-1)

    def __call__(self, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, L); got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens; the text encoder takes at most "
                f"{self.config.max_position_embeddings}"
            )
        hidden = self.encoder(self.embeddings(input_ids))
        hidden = self.final_layer_norm(hidden)
        pooled = hidden[jnp.arange(hidden.shape[0]), self.end_of_text_positions(input_ids)]
        return hidden, pooled


def build_text_encoder(
    config: TextEncoderConfig | Mapping[str, Any],
    *,
    seed: int = 0,
    dtype: Dtype = None,
    abstract: bool = False,
) -> CLIPTextModel:
    """Build a randomly initialised text encoder (or, with ``abstract``, one holding only shapes)."""
    cfg = config if isinstance(config, TextEncoderConfig) else TextEncoderConfig.from_transformers(config)
    return build_model(CLIPTextModel, cfg, seed=seed, dtype=dtype, abstract=abstract)
