"""Instruction-based image editing: InstructPix2Pix sampling with reward conditioning, in one jitted function.

Implements the inference of Gu et al. 2024 (docs/sources.md, "Reward-conditioned U-Net" and
"Generation settings") on the Flax models of this
package. For images ``x`` (B, H, W, 3) and instructions:

1. ``source_latent`` = VAE posterior mode of ``x``, *not* scaled (the InstructPix2Pix convention);
   ``latents`` = noise * ``init_noise_sigma`` (B, H/f, W/f, 4), each example's noise (and ancestral step
   noise) drawn from its own seed, so an edit does not depend on the batch it is sampled in.
2. Every step runs the U-Net once on a stacked batch of branches, each the scaled ``latents``
   concatenated (channels) with an image condition, with a text context and a reward condition:

   - ``e_ti``: (instruction, source_latent), ``e_i``: (empty text, source_latent), ``e_u``: (empty text,
     zeros) -- the three classifier-free-guidance branches of InstructPix2Pix (Brooks et al. 2023),
     stacked in this order as diffusers' ``StableDiffusionInstructPix2PixPipeline`` does;
   - with *reward guidance*, a fourth branch ``e_ti_low``: (instruction, source_latent) under a low
     reward condition (this project's addition; the paper does not use it).

   The reward condition (scores (B, 3) and the pooled CLIP embedding of the feedback text) is the same
   for the three CFG branches, as in the official inference (best scores 5, 5, 5 and ``"None; None;
   None"`` by default). The guided prediction is::

       eps = e_u + g_text (e_ti - e_i) + g_img (e_i - e_u) [+ g_reward (e_ti - e_ti_low)]

   Like diffusers, guidance is applied only when ``g_text > 1`` and ``g_img >= 1``; otherwise the
   prediction is ``e_ti`` (plus the reward term) from a single branch.
3. The scheduler (:mod:`rewardedit_jax.sampling.schedulers`) steps ``latents``; the loop is a
   ``lax.fori_loop`` inside the same jitted function as the text encoder, the VAE encoder and decoder.
4. ``latents / scaling_factor`` is decoded to pixels in [-1, 1] and quantized to uint8.

The compiled function is cached per (batch, height, width, steps, guidance structure): guidance scales,
seeds, texts and reward conditions are traced inputs and never recompile. ``EditSampler.compile_count``
counts compilations. With a ``jax.sharding.Mesh`` the batch is sharded over its data axis and the model
replicated; each device runs the unsharded program (``shard_map``) on its examples, so an edit comes out
bit-identical to a one-device run with the same per-device batch (tested on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from rewardedit_jax.models.attention import IMPLEMENTATIONS, attention_implementation
from rewardedit_jax.models.reward import BEST_FEEDBACK, BEST_SCORES, NUM_SCORES
from rewardedit_jax.sampling.schedulers import Schedule, make_schedule
from rewardedit_jax.schedule import NoiseSchedule

# The low reward condition of the reward-guidance branch unless given (this project's choice): the worst
# scores and an empty feedback text.
LOW_REWARD_SCORES = (0.0, 0.0, 0.0)
LOW_REWARD_FEEDBACK = ""
# Official generation settings (official `eval.py`; docs/sources.md, "Generation settings").
DEFAULT_STEPS = 30
DEFAULT_TEXT_GUIDANCE = 7.5
DEFAULT_IMAGE_GUIDANCE = 1.5
DEFAULT_SEED = 42
DEFAULT_RESOLUTION = 512
SIZE_MULTIPLE = 64
# cuDNN for every attention the GPU allows, the 77-token cross-attention keys padded and masked: the same
# function as "auto" and the faster one on GPUs (benchmarks/NOTES.md); on CPU and TPU it is "auto".
DEFAULT_ATTENTION = "auto_padded"
# The dtypes the command-line tools and config.evals offer; auto: resolve_dtype.
DTYPES = ("auto", "float32", "bfloat16")


def resolve_dtype(name: str) -> str:
    """A dtype of :data:`DTYPES` by name: ``auto`` is float32 on CPU and bfloat16 on GPU/TPU."""
    if name != "auto":
        return name
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """Edited images (B, H, W, 3) uint8 and the final latents (B, H/f, W/f, C) float32 (scaled space)."""

    images: np.ndarray
    latents: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Structure:
    """What a compiled sampler is specialized to (the compilation cache key)."""

    batch: int
    height: int
    width: int
    num_steps: int
    classifier_free: bool
    reward_guidance: bool


def per_example_normal(keys: jax.Array, i, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal draws (B, *shape), float32: example b from ``fold_in(keys[b], i)``."""
    return jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32))(keys)


def _is_float(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _as_scores(scores, batch: int, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float32)
    if arr.shape == (NUM_SCORES,):
        arr = np.broadcast_to(arr, (batch, NUM_SCORES))
    if arr.shape != (batch, NUM_SCORES):
        raise ValueError(
            f"{what} must be {NUM_SCORES} scores or ({batch}, {NUM_SCORES}); got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite; got {arr.tolist()}")
    return np.ascontiguousarray(arr)


def _as_texts(texts: str | Sequence[str], batch: int, what: str) -> list[str]:
    texts = [texts] * batch if isinstance(texts, str) else list(texts)
    if len(texts) != batch or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{what} must be a string or {batch} strings; got {texts!r}")
    return texts


def _as_pixels(images) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1]; float images are taken as already in [-1, 1]. NHWC, batched."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) or (H, W, 3); got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [-1, 1]; got dtype {arr.dtype}")
    return arr.astype(np.float32)


class EditSampler:
    """Edits images with an (optionally reward-conditioned) InstructPix2Pix model; see the module docstring.

    ``unet``, ``vae``, ``text_encoder``: the Flax models; ``tokenizer``: :class:`rewardedit_jax.tokenizer.
    Tokenizer`; ``scheduler_config``: the diffusers scheduler config dict (or a ``NoiseSchedule``);
    ``scheduler``: ``euler_ancestral`` (official), ``euler`` or ``ddim``; ``dtype``: parameters and
    activations of the models while sampling (float32 or bfloat16; the scheduler and the latents stay
    float32); ``mesh``: shard the batch over ``mesh.shape[data_axis]`` devices; ``attention``: the
    attention implementation the models are traced with (:mod:`rewardedit_jax.models.attention`);
    ``log``: a function that takes progress lines (e.g. compile times), or None; ``compiler_options``: XLA
    options for the compilation (e.g. ``{"xla_backend_optimization_level": 0}`` halves CPU compile time in
    tests).
    """

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config: Mapping[str, Any] | NoiseSchedule,
        *,
        scheduler: str = "euler_ancestral",
        dtype=jnp.float32,
        mesh: Mesh | None = None,
        data_axis: str = "data",
        attention: str = DEFAULT_ATTENTION,
        log: Callable[[str], None] | None = None,
        compiler_options: Mapping[str, Any] | None = None,
    ):
        latent_channels = vae.config.latent_channels
        if unet.config.in_channels != 2 * latent_channels:
            raise ValueError(
                f"an editing U-Net takes {2 * latent_channels} input channels (noisy latent + source "
                f"latent); this one takes {unet.config.in_channels}"
            )
        if unet.config.cross_attention_dim[0] != text_encoder.config.hidden_size:
            raise ValueError(
                f"the U-Net's cross-attention width {unet.config.cross_attention_dim[0]} differs from the "
                f"text encoder's hidden size {text_encoder.config.hidden_size}"
            )
        self.scheduler = scheduler
        self.scheduler_config = scheduler_config
        make_schedule(scheduler, scheduler_config, 1)  # validate the configuration now
        self.dtype = jnp.dtype(dtype)
        if self.dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
            raise ValueError(f"dtype must be float32, bfloat16 or float16; got {self.dtype}")
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {IMPLEMENTATIONS}; got {attention!r}")
        self.attention = attention
        self.tokenizer = tokenizer
        self.has_reward = bool(unet.has_reward)
        self.latent_channels = latent_channels
        self.vae_factor = vae.config.downsample_factor
        self.scaling_factor = float(vae.scaling_factor)
        self.log = log
        self.compiler_options = dict(compiler_options or {})
        self.data_axis = data_axis
        self.mesh = None
        if mesh is not None:
            if data_axis not in mesh.shape:
                raise ValueError(f"mesh has no axis {data_axis!r} (axes: {tuple(mesh.shape)})")
            # Shardings are given explicitly here; XLA propagates them inside (Auto axes).
            self.mesh = Mesh(
                mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names)
            )
        self._graphdef, state = nnx.split((unet, vae, text_encoder))
        self._state = self._prepare(state)
        self._empty_ids = np.asarray(tokenizer([""]), np.int32)
        self._schedules: dict[int, Schedule] = {}
        self._compiled: dict[_Structure, Any] = {}
        self.compile_count = 0

    def _prepare(self, state):
        """Model state in the sampler's dtype, replicated over its mesh."""
        state = jax.tree.map(lambda x: x.astype(self.dtype) if _is_float(x) else x, state)
        if self.mesh is not None:
            return jax.device_put(state, NamedSharding(self.mesh, PartitionSpec()))
        return jax.device_put(state)

    def set_unet_params(self, params) -> None:
        """Replace the U-Net's parameters (an ``nnx.State`` of its ``nnx.Param`` leaves, e.g. a training
        state's EMA, host or device arrays) without recompiling: shapes and structure must match."""
        unet, vae, text_encoder = nnx.merge(self._graphdef, self._state)
        current = nnx.state(unet, nnx.Param)
        if jax.tree.structure(current) != jax.tree.structure(params):
            raise ValueError("the new U-Net parameters do not have the structure of the sampler's U-Net")
        mismatched = [
            jax.tree_util.keystr(path)
            for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(current), jax.tree.leaves(params))
            if tuple(a.shape) != tuple(np.shape(b))
        ]
        if mismatched:
            raise ValueError(f"the new U-Net parameters differ in shape at {mismatched[0]}")
        nnx.update(unet, params)
        graphdef, state = nnx.split((unet, vae, text_encoder))
        self._state = self._prepare(state)

    @classmethod
    def from_pipeline(cls, pipeline, **kwargs) -> EditSampler:
        """A sampler over the components of a :class:`rewardedit_jax.convert.Pipeline`."""
        return cls(
            pipeline.unet,
            pipeline.vae,
            pipeline.text_encoder,
            pipeline.tokenizer,
            pipeline.scheduler_config,
            **kwargs,
        )

    def schedule(self, num_steps: int) -> Schedule:
        if num_steps not in self._schedules:
            self._schedules[num_steps] = make_schedule(self.scheduler, self.scheduler_config, num_steps)
        return self._schedules[num_steps]

    def _log(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    # ------------------------------------------------------------------ the jitted sampler

    def _sample_fn(self, structure: _Structure, schedule: Schedule):
        graphdef, dtype = self._graphdef, self.dtype
        scaling_factor, has_reward = self.scaling_factor, self.has_reward
        cfg, reward_guidance = structure.classifier_free, structure.reward_guidance

        def run(state, inputs, scales):
            unet, vae, text_encoder = nnx.merge(graphdef, state)
            # One text-encoder call for every text: instructions, the empty prompt, feedback texts.
            names = ["instruction_ids", "empty_ids", "feedback_ids", "low_feedback_ids"]
            names = [name for name in names if name in inputs]
            hidden, pooled = text_encoder(jnp.concatenate([inputs[name] for name in names]))
            sizes = np.cumsum([inputs[name].shape[0] for name in names])[:-1].tolist()
            hidden, pooled = (
                dict(zip(names, jnp.split(hidden, sizes))),
                dict(zip(names, jnp.split(pooled, sizes))),
            )
            text = hidden["instruction_ids"]
            empty = jnp.broadcast_to(hidden["empty_ids"], text.shape)
            source_latent, _ = vae.encode(inputs["pixels"].astype(dtype))  # posterior mode, unscaled
            zeros = jnp.zeros_like(source_latent)
            # Branches: (text, image), [(empty, image), (empty, no image)], [(text, image, low reward)].
            contexts, conditions = [text], [source_latent]
            if cfg:
                contexts += [empty, empty]
                conditions += [source_latent, zeros]
            if reward_guidance:
                contexts.append(text)
                conditions.append(source_latent)
            n_branches = len(contexts)
            context = jnp.concatenate(contexts)
            condition = jnp.concatenate(conditions)
            reward = {}
            if has_reward:
                scores = [inputs["reward_scores"]] * (3 if cfg else 1)
                feedbacks = [pooled["feedback_ids"]] * (3 if cfg else 1)
                if reward_guidance:
                    scores.append(inputs["low_reward_scores"])
                    feedbacks.append(pooled["low_feedback_ids"])
                reward = {
                    "reward_scores": jnp.concatenate(scores),
                    "feedback_embeds": jnp.concatenate(feedbacks),
                }
            g_text, g_image, g_reward = scales[0], scales[1], scales[2]
            timesteps = jnp.asarray(schedule.timesteps)

            def denoise(i, latents):
                model_input = schedule.scale_model_input(latents, i)
                model_input = jnp.concatenate(
                    [jnp.tile(model_input, (n_branches, 1, 1, 1)).astype(dtype), condition.astype(dtype)],
                    axis=-1,
                )
                out = unet(model_input, timesteps[i], context, **reward).astype(jnp.float32)
                branches = jnp.split(out, n_branches)
                e_ti = branches[0]
                if cfg:
                    e_i, e_u = branches[1], branches[2]
                    eps = e_u + g_text * (e_ti - e_i) + g_image * (e_i - e_u)
                else:
                    eps = e_ti
                if reward_guidance:
                    eps = eps + g_reward * (e_ti - branches[-1])
                noise = None
                if schedule.needs_noise:
                    noise = per_example_normal(step_keys, i, latents.shape[1:])
                return schedule.step(eps, i, latents, noise)

            # Noise from each example's own seed, so an edit does not depend on the batch it is in.
            keys = jax.vmap(jax.random.key)(inputs["seeds"])
            noise_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 0)
            step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
            noise = jnp.where(
                inputs["noise_given"][:, None, None, None],
                inputs["noise"].astype(jnp.float32),
                per_example_normal(noise_keys, 0, inputs["noise"].shape[1:]),
            )
            latents = noise * schedule.init_noise_sigma
            latents = jax.lax.fori_loop(0, schedule.num_steps, denoise, latents)
            decoded = vae.decode((latents / scaling_factor).astype(dtype)).astype(jnp.float32)
            images = jnp.round(jnp.clip(decoded / 2 + 0.5, 0.0, 1.0) * 255).astype(jnp.uint8)
            return latents, images

        return run

    def _compiled_for(self, structure: _Structure, inputs: dict, scales: jax.Array):
        compiled = self._compiled.get(structure)
        if compiled is None:
            start = time.perf_counter()
            run = self._sample_fn(structure, self.schedule(structure.num_steps))
            if self.mesh is not None:
                # Each device runs the unsharded program on its own examples: an edit is computed exactly as
                # on one device with that per-device batch (no resharding inside, whatever XLA propagates).
                batched, replicated = PartitionSpec(self.data_axis), PartitionSpec()
                specs = {k: replicated if k == "empty_ids" else batched for k in inputs}
                run = jax.shard_map(
                    run,
                    mesh=self.mesh,
                    in_specs=(replicated, specs, replicated),
                    out_specs=(batched, batched),
                    check_vma=False,
                )
            with attention_implementation(self.attention):  # chosen when the models are traced
                lowered = jax.jit(run).lower(self._state, inputs, scales)
            compiled = lowered.compile(self.compiler_options or None)
            self._compiled[structure] = compiled
            self.compile_count += 1
            self._log(
                f"compiled the sampler for batch {structure.batch} at {structure.height}x{structure.width}, "
                f"{structure.num_steps} steps in {time.perf_counter() - start:.1f} s"
            )
        return compiled

    # ------------------------------------------------------------------ the public call

    def __call__(
        self,
        images,
        instructions: str | Sequence[str],
        *,
        num_steps: int = DEFAULT_STEPS,
        text_guidance: float = DEFAULT_TEXT_GUIDANCE,
        image_guidance: float = DEFAULT_IMAGE_GUIDANCE,
        seed: int = DEFAULT_SEED,
        reward_scores=None,
        feedback: str | Sequence[str] | None = None,
        reward_guidance: float | None = None,
        low_reward_scores=LOW_REWARD_SCORES,
        low_feedback: str | Sequence[str] = LOW_REWARD_FEEDBACK,
        initial_noise=None,
    ) -> SampleOutput:
        """Edit ``images`` ((B, H, W, 3) uint8, or float in [-1, 1]) following ``instructions``.

        ``seed``: one integer for every example or B integers (``evaluate`` seeds edit i with 42 + i: the
        official ``eval.py`` draws fresh noise for every edit from one generator seeded 42); an example's
        noise depends only on its own seed, never on the rest of the batch.
        ``reward_scores`` (3 or (B, 3)) and ``feedback`` (one string or B) condition a reward model
        (default: best scores 5, 5, 5 and ``"None; None; None"``); they are an error for a stock model.
        ``reward_guidance`` (a scale, default off) adds the low-reward branch (``low_reward_scores``,
        ``low_feedback``). ``initial_noise`` (B, H/f, W/f, C) replaces the standard normal draw from
        the seed (the seed still drives the ancestral noise).
        """
        pixels = _as_pixels(images)
        batch, height, width, _ = pixels.shape
        f = self.vae_factor
        if height % f or width % f:
            raise ValueError(f"image height and width must be multiples of {f}; got {height}x{width}")
        instructions = _as_texts(instructions, batch, "instructions")
        if not self.has_reward and (reward_scores is not None or feedback is not None):
            raise ValueError(
                "this model has no reward conditioning; reward_scores/feedback must not be given"
            )
        if not self.has_reward and reward_guidance is not None:
            raise ValueError("reward guidance needs a reward-conditioned model")
        latent_shape = (batch, height // f, width // f, self.latent_channels)
        seeds = np.asarray(seed)
        if seeds.ndim == 0:
            seeds = np.full((batch,), seeds)
        if seeds.shape != (batch,) or not np.issubdtype(seeds.dtype, np.integer):
            raise ValueError(f"seed must be an integer or {batch} integers; got {seed!r}")
        if seeds.min() < 0 or seeds.max() >= 2**32:
            raise ValueError(f"seeds must be in [0, 2**32); got {seeds.tolist()}")
        given = initial_noise is not None
        noise = np.zeros(latent_shape, np.float32) if not given else np.asarray(initial_noise, np.float32)
        if noise.shape != latent_shape:
            raise ValueError(f"initial_noise must have shape {latent_shape}; got {noise.shape}")
        inputs = {
            "pixels": pixels,
            "instruction_ids": self.tokenizer(instructions),
            "seeds": seeds.astype(np.uint32),
            "noise": noise,
            "noise_given": np.full((batch,), given),
        }
        if self.has_reward:
            inputs["reward_scores"] = _as_scores(
                BEST_SCORES if reward_scores is None else reward_scores, batch, "reward_scores"
            )
            inputs["feedback_ids"] = self.tokenizer(
                _as_texts(BEST_FEEDBACK if feedback is None else feedback, batch, "feedback")
            )
            if reward_guidance is not None:
                inputs["low_reward_scores"] = _as_scores(low_reward_scores, batch, "low_reward_scores")
                inputs["low_feedback_ids"] = self.tokenizer(_as_texts(low_feedback, batch, "low_feedback"))
        padded = self._pad_batch(inputs, batch)
        padded_batch = padded["pixels"].shape[0]
        padded["empty_ids"] = self._empty_ids
        padded = self._place(padded)
        classifier_free = text_guidance > 1.0 and image_guidance >= 1.0
        structure = _Structure(
            padded_batch, height, width, int(num_steps), classifier_free, reward_guidance is not None
        )
        scales = jnp.asarray(
            [text_guidance, image_guidance, 0.0 if reward_guidance is None else reward_guidance], jnp.float32
        )
        compiled = self._compiled_for(structure, padded, scales)
        latents, edited = compiled(self._state, padded, scales)
        return SampleOutput(images=np.asarray(edited)[:batch], latents=np.asarray(latents)[:batch])

    def _pad_batch(self, inputs: dict, batch: int) -> dict:
        """Repeat the last example so that the batch divides over the mesh's data axis."""
        if self.mesh is None:
            return dict(inputs)
        shards = self.mesh.shape[self.data_axis]
        extra = -batch % shards
        if not extra:
            return dict(inputs)
        return {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for k, v in inputs.items()}

    def _place(self, inputs: dict) -> dict:
        if self.mesh is None:
            return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        batched = NamedSharding(self.mesh, PartitionSpec(self.data_axis))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        return {k: jax.device_put(v, replicated if k == "empty_ids" else batched) for k, v in inputs.items()}


# ---------------------------------------------------------------------- input images (official protocol)


def edit_size(
    width: int, height: int, resolution: int = DEFAULT_RESOLUTION, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """The (width, height) an input is fitted to: long side about ``resolution``, sides multiples of
    ``multiple`` (64).

    The InstructPix2Pix/Reward-Edit protocol (official `eval.py`; docs/sources.md, "Generation settings"):
    scale so the long side is ``resolution``, round the short side *up* to a multiple of 64, then floor both
    sides to multiples of 64. A model trained below 64 px fits with a smaller ``multiple`` (its VAE factor).
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    if multiple < 1 or resolution < multiple:
        raise ValueError(f"resolution must be at least {multiple}; got {resolution}")
    short = min(width, height)
    factor = resolution / max(width, height)
    factor = math.ceil(short * factor / multiple) * multiple / short
    fitted_w = int((width * factor) // multiple) * multiple
    fitted_h = int((height * factor) // multiple) * multiple
    return max(fitted_w, multiple), max(fitted_h, multiple)


def load_edit_image(
    path: str | os.PathLike, resolution: int = DEFAULT_RESOLUTION, multiple: int = SIZE_MULTIPLE
) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), fitted (centre crop + LANCZOS) to :func:`edit_size`."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    size = edit_size(image.width, image.height, resolution, multiple)
    if size != image.size:
        image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)
