"""The three models validate their diffusers/transformers config keys through one helper."""

import pytest

from rewardedit_jax.models.clip_text import TextEncoderConfig
from rewardedit_jax.models.layers import UnsupportedConfigError, check_config_keys
from rewardedit_jax.models.unet import UNetConfig
from rewardedit_jax.models.vae import VAEConfig

PARSERS = {
    "U-Net": UNetConfig.from_diffusers,
    "VAE": VAEConfig.from_diffusers,
    "text encoder": TextEncoderConfig.from_transformers,
}


@pytest.mark.parametrize("what", PARSERS)
def test_an_unknown_key_is_refused_with_the_model_and_key_named(what):
    with pytest.raises(UnsupportedConfigError, match=f"^unknown {what} config key 'colour'=3$"):
        PARSERS[what]({"colour": 3})
    PARSERS[what]({"_class_name": "x", "_diffusers_version": "0.42.1"})  # bookkeeping keys pass


def test_fixed_keys_take_their_supported_values_only():
    fixed = {"mode": "a", "flag": {None, False}}
    check_config_keys({"mode": "a", "flag": False, "size": 3, "note": "x"}, what="M", known={"size"},
                      fixed=fixed, ignored={"note"})  # fmt: skip
    check_config_keys({"flag": None}, what="M", known=(), fixed=fixed)
    with pytest.raises(UnsupportedConfigError, match=r"^unsupported M config key 'mode'='b' \(only 'a' is"):
        check_config_keys({"mode": "b"}, what="M", known=(), fixed=fixed)
    with pytest.raises(UnsupportedConfigError, match=r"'flag'=True \(only False or None is supported\)"):
        check_config_keys({"flag": True}, what="M", known=(), fixed=fixed)
    with pytest.raises(UnsupportedConfigError, match="'mid_block_only_cross_attention'=True"):
        UNetConfig.from_diffusers({"mid_block_only_cross_attention": True})
    UNetConfig.from_diffusers({"mid_block_only_cross_attention": False})
    with pytest.raises(UnsupportedConfigError, match="'act_fn'='gelu'"):
        VAEConfig.from_diffusers({"act_fn": "gelu"})
