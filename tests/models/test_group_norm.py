"""``GroupNorm``'s two computations (``flax`` and ``channel_sums``) are the same function: values and
input/parameter gradients agree, in float32 and bfloat16, for several group sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rewardedit_jax.models.layers import (
    GroupNorm,
    get_group_norm_implementation,
    group_norm,
    group_norm_implementation,
)


def make_norm(channels: int, groups: int, dtype, seed: int = 0) -> GroupNorm:
    norm = group_norm(channels, groups, 1e-5, rngs=nnx.Rngs(seed), dtype=dtype)
    rng = np.random.default_rng(seed)
    norm.scale[...] = jnp.asarray(rng.normal(1.0, 0.5, channels), jnp.float32)
    norm.bias[...] = jnp.asarray(rng.normal(0.0, 0.5, channels), jnp.float32)
    return norm


def run(norm: GroupNorm, x: jax.Array, weights: jax.Array, implementation: str):
    """Output and the gradients of a weighted sum of it with respect to the input, scale and bias."""
    graphdef, params = nnx.split(norm)

    def loss(params, x):
        with group_norm_implementation(implementation):
            y = nnx.merge(graphdef, params)(x)
        return jnp.sum(y.astype(jnp.float32) * weights), y

    (_, y), (grad_params, grad_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, grad_x, grad_params["scale"][...], grad_params["bias"][...]


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    ("shape", "groups"),
    [((2, 6, 5, 64), 32), ((3, 4, 4, 96), 32), ((2, 7, 3, 32), 32), ((2, 9, 16), 4)],
)
def test_channel_sums_matches_flax_in_float32(shape, groups):
    norm = make_norm(shape[-1], groups, jnp.float32)
    rng = np.random.default_rng(1)
    # An offset and a scale per channel, so that the mean matters and groups differ.
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, shape[-1]) + rng.normal(2.0, 1.0, shape[-1])
    x = jnp.asarray(x, jnp.float32)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    reference = run(norm, x, weights, "flax")
    ours = run(norm, x, weights, "channel_sums")
    for name, a, b in zip(("output", "d input", "d scale", "d bias"), ours, reference):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert relative(a, b) < 1e-5, (name, relative(a, b))


def test_channel_sums_matches_flax_in_bfloat16():
    norm = make_norm(320, 32, jnp.bfloat16)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 320)) * 2.0 + 0.5, jnp.bfloat16)
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    reference = run(norm, x, weights, "flax")
    ours = run(norm, x, weights, "channel_sums")
    assert ours[0].dtype == reference[0].dtype == jnp.bfloat16
    # Statistics are float32 in both; the bfloat16 output rounds at 2^-8 relative.
    for name, a, b in zip(("output", "d input", "d scale", "d bias"), ours, reference):
        assert relative(a, b) < 1e-2, (name, relative(a, b))


def test_the_choice_is_scoped_and_checked():
    assert get_group_norm_implementation() == "flax"
    with group_norm_implementation("channel_sums"):
        assert get_group_norm_implementation() == "channel_sums"
    assert get_group_norm_implementation() == "flax"
    with pytest.raises(ValueError, match="GroupNorm implementation 'welford' is not one of"):
        with group_norm_implementation("welford"):
            pass
