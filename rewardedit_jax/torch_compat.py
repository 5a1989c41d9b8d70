"""PyTorch counterparts of the rewardedit-jax models, for the diffusers world.

:class:`RewardUNet2DConditionModel` is diffusers' ``UNet2DConditionModel`` plus the reward modules of
Gu et al. 2024 under the official state-dict names (``add_time_proj``, ``add_embedding``,
``add_embedding2``, ``text_linear``, ``text_linear2``, ``proj_deal``, ``ca``), called with the official
convention::

    unet(sample, t, encoder_hidden_states,
         added_cond_kwargs={"reward_scores": scores,        # (B, 3) floats 0..5
                            "negative_embeds": feedback})   # (B, 768) pooled CLIP text embedding

so a stage-2 export (``python -m rewardedit_jax.convert export``) loads with ``.from_pretrained(dir)``
and code written for the official checkpoints runs unchanged. Requires the ``torch`` extra.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

# diffusers' pipeline loader resolves a model_index.json entry ["rewardedit_jax.torch_compat", CLASS] by
# looking up the loadable base classes (ModelMixin) in this module's namespace.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

__all__ = ["IdentityAutoencoder", "RewardEditPipeline", "RewardUNet2DConditionModel"]

_REWARD_DEFAULTS = {"reward_score_embed_dim": 256, "reward_num_heads": 8}


class _Projections(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)


class _DenseLayerNorm(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)  # noqa: N815 (official key name)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.self = _Projections(dim)
        self.output = _DenseLayerNorm(dim, dropout)


class _Intermediate(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x):
        return F.gelu(self.dense(x))


class LatentCrossAttention(nn.Module):
    """``ca``: queries are latent tokens, keys/values the [reward, feedback] tokens (BERT-style layer)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.num_heads = num_heads
        self.attention = _Attention(dim, dropout)
        self.probs_dropout = nn.Dropout(dropout)
        self.hidden_intermediate = _Intermediate(dim)
        self.output = _DenseLayerNorm(dim, dropout)

    def forward(self, queries, tokens):
        b, lq, d = queries.shape
        h = self.num_heads
        proj = self.attention.self

        def heads(x):
            return x.view(b, -1, h, d // h).transpose(1, 2)

        q, k, v = heads(proj.query(queries)), heads(proj.key(tokens)), heads(proj.value(tokens))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
        context = (self.probs_dropout(probs) @ v).transpose(1, 2).reshape(b, lq, d)
        attended = self.attention.output(context, queries)
        return self.output(self.hidden_intermediate(attended), attended)


class LatentProjection(nn.Module):
    """``proj_deal``: GroupNorm + 1x1 conv into tokens, 1x1 conv back."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)


class RewardUNet2DConditionModel(UNet2DConditionModel):
    """diffusers ``UNet2DConditionModel`` with reward conditioning (see the module docstring)."""

    def __init__(self, *args, reward_score_embed_dim: int = 256, reward_num_heads: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_to_config(
            reward_score_embed_dim=reward_score_embed_dim, reward_num_heads=reward_num_heads
        )
        cfg = self.config
        channels = cfg.block_out_channels[0]
        time_embed_dim = self.time_embedding.linear_2.out_features
        cross = cfg.cross_attention_dim
        text_dim = cross if isinstance(cross, int) else cross[0]
        scores_dim = 3 * reward_score_embed_dim
        self.add_time_proj = Timesteps(reward_score_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.add_embedding = TimestepEmbedding(scores_dim, time_embed_dim)
        self.add_embedding2 = TimestepEmbedding(scores_dim, channels)
        self.text_linear = nn.Linear(text_dim, channels)
        self.text_linear2 = nn.Linear(text_dim, time_embed_dim)
        self.proj_deal = LatentProjection(channels, cfg.norm_num_groups)
        self.ca = LatentCrossAttention(channels, reward_num_heads)

    def reward_embeddings(self, reward_scores: torch.Tensor, feedback_embeds: torch.Tensor, dtype):
        """(time-embedding addend (B, T), condition tokens (B, 2, C))."""
        batch = reward_scores.shape[0]
        sinusoid = self.add_time_proj(reward_scores.flatten()).reshape(batch, -1).to(dtype)
        feedback_embeds = feedback_embeds.to(dtype)
        temb = self.add_embedding(sinusoid) + self.text_linear2(feedback_embeds)
        tokens = torch.stack([self.add_embedding2(sinusoid), self.text_linear(feedback_embeds)], dim=1)
        return temb, tokens

    def condition_latent(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        x = self.proj_deal.proj_in(self.proj_deal.norm(h))
        x = x.permute(0, 2, 3, 1).reshape(b, height * width, c)
        x = self.ca(x, tokens.to(x.dtype))
        x = x.reshape(b, height, width, c).permute(0, 3, 1, 2)
        return self.proj_deal.proj_out(x) + h

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict | None = None,
        cross_attention_kwargs: dict | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        **unused,
    ):
        if not added_cond_kwargs or "reward_scores" not in added_cond_kwargs:
            raise ValueError(
                "RewardUNet2DConditionModel needs added_cond_kwargs={'reward_scores': (B, 3), "
                "'negative_embeds': (B, D)}"
            )
        if "negative_embeds" not in added_cond_kwargs:
            raise ValueError(
                "added_cond_kwargs lacks 'negative_embeds' (pooled feedback text embedding, (B, D))"
            )
        unsupported = [k for k, v in unused.items() if v is not None]
        if unsupported:
            raise ValueError(f"RewardUNet2DConditionModel does not support {unsupported}")
        if encoder_attention_mask is not None:
            encoder_attention_mask = (1 - encoder_attention_mask.to(sample.dtype)) * -10000.0
            encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

        up_factor = 2**self.num_upsamplers
        forward_upsample_size = any(d % up_factor for d in sample.shape[-2:])

        emb = self.time_embedding(self.get_time_embed(sample=sample, timestep=timestep))
        reward_temb, tokens = self.reward_embeddings(
            added_cond_kwargs["reward_scores"], added_cond_kwargs["negative_embeds"], emb.dtype
        )
        emb = emb + reward_temb
        h = self.condition_latent(self.conv_in(sample), tokens)

        attn_kwargs = {
            "encoder_hidden_states": encoder_hidden_states,
            "cross_attention_kwargs": cross_attention_kwargs,
            "encoder_attention_mask": encoder_attention_mask,
        }
        skips = (h,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(hidden_states=h, temb=emb, **attn_kwargs)
            else:
                h, res = block(hidden_states=h, temb=emb)
            skips += res
        h = self.mid_block(h, emb, **attn_kwargs)
        for i, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            size = skips[-1].shape[2:] if (i < len(self.up_blocks) - 1 and forward_upsample_size) else None
            if getattr(block, "has_cross_attention", False):
                h = block(
                    hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size, **attn_kwargs
                )
            else:
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        if not return_dict:
            return (h,)
        return UNet2DConditionOutput(sample=h)


# diffusers reads a model's config keys from its __init__ signature: expose the base keys plus ours.
_base = inspect.signature(UNet2DConditionModel.__init__)
RewardUNet2DConditionModel.__init__.__signature__ = _base.replace(
    parameters=list(_base.parameters.values())
    + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in _REWARD_DEFAULTS.items()
    ]
)


class IdentityAutoencoder(ModelMixin, ConfigMixin):
    """Pixel-space stand-in for AutoencoderKL (latents are the images), for tiny demo models.

    Mirrors ``rewardedit_jax.models.vae.IdentityAutoencoder``: ``encode`` returns a posterior whose mean
    is the image (log-variance -30), ``decode`` returns the latents; ``scaling_factor`` 1.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        scaling_factor: float = 1.0,
        latent_channels: int = 3,
        block_out_channels: tuple[int, ...] = (3,),  # one level: pipelines derive a scale factor of 1
    ):
        super().__init__()
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    @property
    def dtype(self):
        return self._device_anchor.dtype

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        posterior = DiagonalGaussianDistribution(torch.cat([x, torch.full_like(x, -30.0)], dim=1))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=z) if return_dict else (z,)


class RewardEditPipeline(StableDiffusionInstructPix2PixPipeline):
    """InstructPix2Pix editing with a reward U-Net, the official inference recipe
    (docs/sources.md, "Generation settings").

    Three CFG branches (text+image, empty+image, empty+no image), all with the same reward condition:
    scores (default 5, 5, 5) and the pooled CLIP embedding of the feedback text (default
    ``"None; None; None"``)::

        pipe = RewardEditPipeline.from_pretrained(exported_dir)
        edited = pipe("make it snowy", image, num_inference_steps=30).images[0]
    """

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self._execution_device)
        out = self.text_encoder(ids)
        return out.last_hidden_state, out.pooler_output

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        image,
        *,
        reward_scores: tuple[float, float, float] = (5.0, 5.0, 5.0),
        feedback: str = "None; None; None",
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
    ):
        from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

        if not isinstance(self.unet, RewardUNet2DConditionModel):
            raise TypeError("RewardEditPipeline needs a RewardUNet2DConditionModel; use the stock pipeline")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        device = self._execution_device
        text, _ = self._encode_texts(prompts)
        empty, _ = self._encode_texts([""] * batch)
        _, feedback_embeds = self._encode_texts([feedback] * batch)
        scores = torch.tensor([list(reward_scores)] * batch, dtype=text.dtype, device=device)

        pixels = self.image_processor.preprocess(image).to(device=device, dtype=self.vae.dtype)
        if pixels.shape[0] == 1 and batch > 1:
            pixels = pixels.repeat(batch, 1, 1, 1)
        image_latents = self.vae.encode(pixels).latent_dist.mode()  # unscaled (IP2P convention)
        branch_images = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
        branch_texts = torch.cat([text, empty, empty])
        reward = {"reward_scores": scores.repeat(3, 1), "negative_embeds": feedback_embeds.repeat(3, 1)}

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if latents is None:
            shape = (batch, self.vae.config.latent_channels) + tuple(image_latents.shape[2:])
            latents = torch.randn(shape, generator=generator, device=device, dtype=text.dtype)
        latents = latents.to(device) * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = self.scheduler.scale_model_input(torch.cat([latents] * 3), t)
            model_in = torch.cat([model_in, branch_images], dim=1)
            eps = self.unet(model_in, t, branch_texts, added_cond_kwargs=reward).sample
            e_text, e_image, e_uncond = eps.chunk(3)
            eps = e_uncond + guidance_scale * (e_text - e_image) + image_guidance_scale * (e_image - e_uncond)
            latents = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
        if output_type == "latent":
            return StableDiffusionPipelineOutput(images=latents, nsfw_content_detected=None)
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        images = self.image_processor.postprocess(decoded, output_type=output_type)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)
