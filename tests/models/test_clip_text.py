"""The Flax CLIP text encoder matches transformers' CLIPTextModel (hidden states and pooled output)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixtures_sd import TINY_VOCAB_SIZE, save_tiny_text_encoder
from flax import nnx

from rewardedit_jax.convert.clip_text import PREFIXED_RENAMES, load_diffusers_text_encoder
from rewardedit_jax.convert.mapping import to_torch_layout, torch_key
from rewardedit_jax.convert.parity import compare
from rewardedit_jax.models.clip_text import TextEncoderConfig, build_text_encoder
from rewardedit_jax.models.layers import UnsupportedConfigError, count_params, fill_random_

# Special ids for the pooled-output paths: the first EOS_ID is never the largest id in a sequence, so
# "first end-of-text" and "argmax of ids" (the legacy eos_token_id == 2 rule) pick different tokens.
EOS_ID = 300
MAX_ID = TINY_VOCAB_SIZE - 1
CONFIGS = {
    # quick_gelu, 2 layers x width 32 x 4 heads, end-of-text id 300 (first-occurrence pooling)
    "quick_gelu": dict(hidden_act="quick_gelu", eos_token_id=EOS_ID),
    # exact gelu, 3 layers x width 48 x 3 heads, legacy end-of-text id 2 (argmax pooling)
    "gelu_legacy_eos": dict(
        hidden_act="gelu", eos_token_id=2, hidden_size=48, num_attention_heads=3, num_hidden_layers=3
    ),
}
SD15_TEXT_ENCODER = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "eos_token_id": 2,
}
SD15_TEXT_ENCODER_PARAMS = 123_060_480


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref||."""
    return compare("", "", out, ref).rel


def token_batch() -> np.ndarray:
    """(3, 77) ids: random tokens, the end-of-text id (300, and 2) at a known place, the max id later."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 290, size=(3, 77))
    for row, (eos_at, max_at) in enumerate([(5, 40), (20, 21), (60, 76)]):
        ids[row, eos_at] = EOS_ID
        ids[row, eos_at + 3] = 2
        ids[row, max_at] = MAX_ID
    return ids.astype(np.int32)


@nnx.jit
def encode(model, input_ids):
    return model(input_ids)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def text_encoder_pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"te_{request.param}")
    overrides = dict(CONFIGS[request.param])
    save_tiny_text_encoder(folder, overrides.pop("hidden_act"), seed=5, **overrides)
    from transformers import CLIPTextModel as TorchCLIPTextModel

    reference = TorchCLIPTextModel.from_pretrained(str(folder)).eval()
    model, _ = load_diffusers_text_encoder(folder)
    return reference, model


def test_hidden_states_and_pooled_output_match_transformers(text_encoder_pair):
    reference, model = text_encoder_pair
    ids = token_batch()
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids).long())
    hidden, pooled = encode(model, jnp.asarray(ids))
    assert hidden.shape == (3, 77, model.config.hidden_size) and pooled.shape == (3, model.config.hidden_size)
    assert rel_err(hidden, expected.last_hidden_state.numpy()) <= 1e-4
    assert rel_err(pooled, expected.pooler_output.numpy()) <= 1e-4


def test_pooled_output_is_taken_where_transformers_takes_it(text_encoder_pair):
    _, model = text_encoder_pair
    ids = token_batch()
    positions = np.asarray(model.end_of_text_positions(jnp.asarray(ids)))
    first_eos, argmax = np.array([5, 20, 60]), np.array([40, 21, 76])
    expected = argmax if model.config.eos_token_id == 2 else first_eos
    np.testing.assert_array_equal(positions, expected)
    hidden, pooled = encode(model, jnp.asarray(ids))
    np.testing.assert_array_equal(np.asarray(pooled), np.asarray(hidden)[np.arange(3), expected])


def test_causal_mask_makes_earlier_hidden_states_independent_of_later_tokens(text_encoder_pair):
    _, model = text_encoder_pair
    ids = token_batch()
    changed = ids.copy()
    changed[:, 30:] = 7
    hidden, _ = encode(model, jnp.asarray(ids))
    hidden_changed, _ = encode(model, jnp.asarray(changed))
    np.testing.assert_allclose(
        np.asarray(hidden)[:, :30], np.asarray(hidden_changed)[:, :30], rtol=1e-6, atol=1e-6
    )
    assert not np.allclose(np.asarray(hidden)[:, 30:], np.asarray(hidden_changed)[:, 30:])


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_act", "fast_gelu"),
        ("eos_token_id", [2, 49407]),
        ("pruned_heads", {"0": [1]}),
        ("num_attention_heads", 5),
        ("position_embedding_type", "rotary"),
    ],
)
def test_unsupported_config_key_is_an_error_naming_the_key(key, value):
    config = {"hidden_size": 64, "num_attention_heads": 4, key: value}
    match = "attention heads" if key == "num_attention_heads" else key
    with pytest.raises(UnsupportedConfigError, match=match):
        TextEncoderConfig.from_transformers(config)


def test_config_ignores_bookkeeping_and_training_keys():
    config = {
        **SD15_TEXT_ENCODER,
        "_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "model_type": "clip_text_model",
        "torch_dtype": "float32",
        "transformers_version": "4.22.0.dev0",
        "layer_norm_eps": 1e-05,
    }
    cfg = TextEncoderConfig.from_transformers(config)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim, cfg.eos_token_id) == (768, 12, 64, 2)


def test_too_long_or_unbatched_input_is_rejected():
    model = build_text_encoder(
        TextEncoderConfig(vocab_size=10, hidden_size=8, num_attention_heads=2), abstract=True
    )
    with pytest.raises(ValueError, match="at most 77"):
        model(jnp.zeros((1, 78), jnp.int32))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model(jnp.zeros((77,), jnp.int32))


@pytest.mark.heavy
def test_sd15_text_encoder_has_the_transformers_parameters_and_runs_jitted():
    from transformers import CLIPTextConfig
    from transformers import CLIPTextModel as TorchCLIPTextModel

    abstract = build_text_encoder(SD15_TEXT_ENCODER, abstract=True)
    assert count_params(abstract) == SD15_TEXT_ENCODER_PARAMS
    with torch.device("meta"):
        reference = TorchCLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER))
    expected = {f"text_model.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    shapes = {}
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        dummy = np.broadcast_to(np.int8(0), var.get_value().shape)
        shapes[torch_key(path, PREFIXED_RENAMES)] = tuple(to_torch_layout(str(path[-1]), dummy).shape)
    assert shapes == expected

    model = fill_random_(abstract)
    ids = np.full((1, 77), 49407, np.int32)
    ids[0, :6] = [49406, 320, 1125, 539, 320, 2368]
    hidden, pooled = encode(model, jnp.asarray(ids))
    assert hidden.shape == (1, 77, 768) and pooled.shape == (1, 768)
    np.testing.assert_array_equal(np.asarray(pooled)[0], np.asarray(hidden)[0, 6])  # first end-of-text
    assert np.isfinite(np.asarray(hidden)).all()
