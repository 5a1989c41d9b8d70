"""Numerical parity between a PyTorch (diffusers) component and its Flax conversion.

Used by ``python -m rewardedit_jax.convert check`` and the test-suite: both models run on the same
random (non-zero) inputs; the result is the max-abs and relative error ``||flax - torch|| / ||torch||``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ParityResult:
    component: str
    output: str
    max_abs: float
    rel: float

    def ok(self, rtol: float) -> bool:
        return bool(np.isfinite(self.rel)) and self.rel <= rtol

    def line(self, rtol: float) -> str:
        status = "ok" if self.ok(rtol) else "FAIL"
        return (
            f"{self.component:<13} {self.output:<14} max_abs={self.max_abs:.3e}  rel={self.rel:.3e}  {status}"
        )


def compare(component: str, output: str, flax_out, torch_out) -> ParityResult:
    a = np.asarray(flax_out, dtype=np.float64)
    b = np.asarray(torch_out, dtype=np.float64)
    if a.shape != b.shape:
        return ParityResult(component, output, float("inf"), float("inf"))
    denom = np.linalg.norm(b)
    rel = float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(a - b))
    return ParityResult(component, output, float(np.max(np.abs(a - b))), rel)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def unet_inputs(cfg, *, batch: int = 2, seq_len: int = 8, size: int | None = None, seed: int = 0) -> dict:
    """Random NHWC inputs for a U-Net config (spatial size a multiple of the total downsampling)."""
    rng = np.random.default_rng(seed)
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    size = size or max(2 * factor, 8)
    inputs = {
        "sample": rng.standard_normal((batch, size, size, cfg.in_channels)).astype(np.float32),
        "timesteps": rng.uniform(0, 1000, batch).astype(np.float32),
        "encoder_hidden_states": rng.standard_normal((batch, seq_len, cfg.cross_attention_dim[0])).astype(
            np.float32
        ),
    }
    if cfg.reward is not None:
        inputs["reward_scores"] = rng.uniform(0, 5, (batch, 3)).astype(np.float32)
        inputs["feedback_embeds"] = rng.standard_normal((batch, cfg.cross_attention_dim[0])).astype(
            np.float32
        )
    return inputs


def run_flax_unet(model, inputs: dict) -> np.ndarray:
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, inputs):
        return nnx.merge(graphdef, state)(**inputs)

    return np.asarray(forward(state, {k: jnp.asarray(v) for k, v in inputs.items()}))


def run_torch_unet(torch_model, inputs: dict) -> np.ndarray:
    import torch

    kwargs = {}
    if "reward_scores" in inputs:
        kwargs["added_cond_kwargs"] = {
            "reward_scores": torch.from_numpy(inputs["reward_scores"]),
            "negative_embeds": torch.from_numpy(inputs["feedback_embeds"]),
        }
    with torch.no_grad():
        out = torch_model(
            torch.from_numpy(nhwc_to_nchw(inputs["sample"])),
            torch.from_numpy(inputs["timesteps"]),
            torch.from_numpy(inputs["encoder_hidden_states"]),
            **kwargs,
        ).sample
    return nchw_to_nhwc(out.float().numpy())


def load_torch_unet(folder: Path, reward: bool):
    """diffusers' UNet2DConditionModel (RewardUNet2DConditionModel for reward weights), fp32, eval mode."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    if reward:
        from rewardedit_jax.torch_compat import RewardUNet2DConditionModel as cls
    else:
        from diffusers import UNet2DConditionModel as cls
    return cls.from_pretrained(str(folder), torch_dtype=torch.float32).eval()


def check_unet(torch_folder: Path, flax_model, *, seed: int = 0) -> list[ParityResult]:
    torch_model = load_torch_unet(torch_folder, flax_model.has_reward)
    inputs = unet_inputs(flax_model.config, seed=seed)
    return [compare("unet", "eps", run_flax_unet(flax_model, inputs), run_torch_unet(torch_model, inputs))]


def _jit_method(model, method: str):
    graphdef, state = nnx.split(model)

    @jax.jit
    def call(state, *args):
        return getattr(nnx.merge(graphdef, state), method)(*args)

    return lambda *args: call(state, *args)


def check_vae(torch_folder: Path, flax_model, *, seed: int = 0) -> list[ParityResult]:
    """Encoder posterior (mean, logvar) and decoder output on random images/latents."""
    import torch
    from diffusers import AutoencoderKL
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch_model = AutoencoderKL.from_pretrained(str(torch_folder), torch_dtype=torch.float32).eval()
    cfg = flax_model.config
    rng = np.random.default_rng(seed)
    size = cfg.downsample_factor * 4
    images = rng.uniform(-1, 1, (2, size, size, cfg.in_channels)).astype(np.float32)
    latents = rng.standard_normal((2, 4, 4, cfg.latent_channels)).astype(np.float32)
    mean, logvar = _jit_method(flax_model, "encode")(jnp.asarray(images))
    decoded = _jit_method(flax_model, "decode")(jnp.asarray(latents))
    with torch.no_grad():
        posterior = torch_model.encode(torch.from_numpy(nhwc_to_nchw(images))).latent_dist
        ref_decoded = torch_model.decode(torch.from_numpy(nhwc_to_nchw(latents))).sample
    return [
        compare("vae", "encode.mean", mean, nchw_to_nhwc(posterior.mean.numpy())),
        compare("vae", "encode.logvar", logvar, nchw_to_nhwc(posterior.logvar.numpy())),
        compare("vae", "decode", decoded, nchw_to_nhwc(ref_decoded.numpy())),
    ]


def check_text_encoder(torch_folder: Path, flax_model, *, seed: int = 0) -> list[ParityResult]:
    """Last hidden state and pooled output on random token ids ending in end-of-text."""
    import torch
    from transformers import CLIPTextModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    torch_model = CLIPTextModel.from_pretrained(str(torch_folder), torch_dtype=torch.float32).eval()
    cfg = torch_model.config
    rng = np.random.default_rng(seed)
    length = min(16, cfg.max_position_embeddings)
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else cfg.vocab_size - 1
    ids = rng.integers(0, min(cfg.vocab_size, eos if eos > 2 else cfg.vocab_size) - 1, (2, length))
    ids[:, -3:] = eos
    ids = ids.astype(np.int32)
    hidden, pooled = _jit_method(flax_model, "__call__")(jnp.asarray(ids))
    with torch.no_grad():
        out = torch_model(torch.from_numpy(ids.astype(np.int64)))
    return [
        compare("text_encoder", "last_hidden", hidden, out.last_hidden_state.numpy()),
        compare("text_encoder", "pooled", pooled, out.pooler_output.numpy()),
    ]


CHECKS = {"unet": check_unet, "vae": check_vae, "text_encoder": check_text_encoder}
