"""The attention switch (``rewardedit_jax.models.attention``): names, and the padded-key path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewardedit_jax.models import attention


def _qkv(rng, batch=2, q_len=24, kv_len=77, heads=2, head_dim=8, dtype=np.float32):
    q = rng.standard_normal((batch, q_len, heads, head_dim)).astype(dtype)
    k = rng.standard_normal((batch, kv_len, heads, head_dim)).astype(dtype)
    v = rng.standard_normal((batch, kv_len, heads, head_dim)).astype(dtype)
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


@pytest.mark.parametrize("kv_len", [77, 64, 1, 130])
def test_padded_keys_give_the_unpadded_result(kv_len):
    """77 text tokens padded to 128 (or any length to its multiple of 64) and masked by length: the
    same attention as without padding, on the portable implementation that checks the arithmetic."""
    q, k, v = _qkv(np.random.default_rng(kv_len), kv_len=kv_len)
    want = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    got = attention.padded_key_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Without the length mask the padded zeros would take part in the softmax: the test can see that.
    pad = -kv_len % attention.CUDNN_KEY_MULTIPLE
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        unmasked = jax.nn.dot_product_attention(q, jnp.pad(k, widths), jnp.pad(v, widths))
        assert float(jnp.abs(unmasked - want).max()) > 1e-3


def test_every_implementation_name_gives_the_same_result_off_gpu():
    """Off GPU, ``auto`` and ``auto_padded`` fall back to XLA: same numbers as ``xla``; unknown names are
    refused by name."""
    q, k, v = _qkv(np.random.default_rng(0))
    with attention.attention_implementation("xla"):
        want = attention.dot_product_attention(q, k, v)
    for name in ("auto", "auto_padded"):
        with attention.attention_implementation(name):
            got = attention.dot_product_attention(q, k, v)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="'flash' is not one of"):
        with attention.attention_implementation("flash"):
            pass
