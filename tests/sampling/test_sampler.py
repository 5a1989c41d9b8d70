"""The jitted editing sampler against diffusers' InstructPix2Pix pipeline, reward conditioning, caching."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rewardedit_jax.configs.sd15 import SD15_SCHEDULER
from rewardedit_jax.convert.clip_text import load_diffusers_text_encoder
from rewardedit_jax.convert.parity import compare, nchw_to_nhwc, nhwc_to_nchw
from rewardedit_jax.convert.unet import load_diffusers_unet
from rewardedit_jax.convert.vae import load_diffusers_vae
from rewardedit_jax.sampling import EditSampler, edit_size
from rewardedit_jax.tokenizer import load_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

SCHEDULER_CONFIG = dict(SD15_SCHEDULER)  # the SD 1.5 training schedule
INSTRUCTIONS = ["make the cat red", "turn it into a dog"]
STEPS = 3
RTOL = 1e-3
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny models: compile time dominates on CPU


def flax_components(root):
    unet, _ = load_diffusers_unet(root / "unet")
    vae, _ = load_diffusers_vae(root / "vae")
    text_encoder, _ = load_diffusers_text_encoder(root / "text_encoder")
    return unet, vae, text_encoder, load_tokenizer(root / "tokenizer")


def diffusers_pipeline(root, scheduler_cls, *, reward: bool = False):
    """The diffusers (or, with ``reward``, the reward) InstructPix2Pix pipeline of the folder ``root``."""
    from diffusers import AutoencoderKL, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from rewardedit_jax.torch_compat import RewardEditPipeline, RewardUNet2DConditionModel

    cls = RewardEditPipeline if reward else StableDiffusionInstructPix2PixPipeline
    pipe = cls(
        vae=AutoencoderKL.from_pretrained(str(root / "vae")).eval(),
        text_encoder=CLIPTextModel.from_pretrained(str(root / "text_encoder")).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(root / "tokenizer")),
        unet=(RewardUNet2DConditionModel if reward else UNet2DConditionModel).from_pretrained(
            str(root / "unet")
        ),
        scheduler=scheduler_cls.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_inputs(batch=2, height=16, width=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    noise = rng.standard_normal((batch, height // 2, width // 2, 4)).astype(np.float32)  # tiny VAE: f = 2
    return images, noise


def torch_images(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (diffusers' image processor maps it to [-1, 1])."""
    return torch.from_numpy(nhwc_to_nchw(images.astype(np.float32) / 255.0))


def diffusers_latents(pipe, images: np.ndarray, noise: np.ndarray, **options) -> torch.Tensor:
    """The final latents (NCHW) of ``pipe`` editing ``images`` by INSTRUCTIONS, STEPS steps from ``noise``."""
    with torch.no_grad():
        return pipe(
            prompt=INSTRUCTIONS,
            image=torch_images(images),
            latents=torch.from_numpy(nhwc_to_nchw(noise)),
            num_inference_steps=STEPS,
            output_type="latent",
            **options,
        ).images


class Stock:
    """The tiny stock IP2P model: its folder, the Flax components, float32 samplers."""

    def __init__(self, root):
        self.root = root
        self.components = flax_components(root)
        self._samplers = {}

    def sampler(self, scheduler: str) -> EditSampler:
        if scheduler not in self._samplers:
            self._samplers[scheduler] = EditSampler(
                *self.components, SCHEDULER_CONFIG, scheduler=scheduler, compiler_options=FAST_COMPILE
            )
        return self._samplers[scheduler]


@pytest.fixture(scope="module")
def stock(tiny_pipeline_dir):
    return Stock(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def reward(tiny_reward_pipeline_dir):
    root = tiny_reward_pipeline_dir
    components = flax_components(root)
    assert components[0].has_reward
    sampler = EditSampler(*components, SCHEDULER_CONFIG, scheduler="euler", compiler_options=FAST_COMPILE)
    return root, sampler


@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_sampler_matches_diffusers_instruct_pix2pix_pipeline(stock, scheduler):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    scheduler_cls = {"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}[scheduler]
    pipe = diffusers_pipeline(stock.root, scheduler_cls)
    images, noise = make_inputs()
    ref_latents = diffusers_latents(pipe, images, noise, guidance_scale=7.5, image_guidance_scale=1.5)
    with torch.no_grad():
        decoded = pipe.vae.decode(ref_latents / pipe.vae.config.scaling_factor).sample
        ref_images = pipe.image_processor.postprocess(decoded, output_type="np")

    sampler = stock.sampler(scheduler)
    out = sampler(
        images, INSTRUCTIONS, num_steps=STEPS, text_guidance=7.5, image_guidance=1.5, initial_noise=noise
    )
    latents = compare("sampler", f"{scheduler} latents", out.latents, nchw_to_nhwc(ref_latents.numpy()))
    level_diff = np.abs(out.images.astype(int) - np.round(ref_images * 255).astype(int))
    print(latents.line(RTOL), f"{scheduler} uint8 images: max level difference {level_diff.max()}", sep="\n")
    assert latents.ok(RTOL), latents.line(RTOL)
    assert out.images.shape == (2, 16, 16, 3) and out.images.dtype == np.uint8
    # Images agree to the quantization step (diffusers' uint8 conversion: round(clip(x / 2 + 0.5) * 255)).
    assert level_diff.max() <= 1


def test_unguided_sampling_matches_diffusers_single_branch(stock):
    """With g_text <= 1 diffusers runs one (text, image) branch; so does the sampler."""
    from diffusers import EulerDiscreteScheduler

    pipe = diffusers_pipeline(stock.root, EulerDiscreteScheduler)
    images, noise = make_inputs()
    ref = diffusers_latents(pipe, images, noise, guidance_scale=1.0, image_guidance_scale=1.5).numpy()
    sampler = stock.sampler("euler")
    out = sampler(
        images, INSTRUCTIONS, num_steps=STEPS, text_guidance=1.0, image_guidance=1.5, initial_noise=noise
    )
    result = compare("sampler", "unguided latents", out.latents, nchw_to_nhwc(ref))
    assert result.ok(RTOL), result.line(RTOL)
    guided = sampler(images, INSTRUCTIONS, num_steps=STEPS, initial_noise=noise)
    assert compare("sampler", "guided", guided.latents, out.latents).rel > 100 * RTOL


def test_reward_sampler_matches_the_torch_reward_pipeline(reward):
    from diffusers import EulerDiscreteScheduler

    root, sampler = reward
    pipe = diffusers_pipeline(root, EulerDiscreteScheduler, reward=True)
    images, noise = make_inputs()
    scores = (4.0, 2.5, 5.0)
    ref = diffusers_latents(pipe, images, noise, reward_scores=scores, feedback="None; blurry; None").numpy()
    out = sampler(
        images,
        INSTRUCTIONS,
        num_steps=STEPS,
        reward_scores=scores,
        feedback="None; blurry; None",
        initial_noise=noise,
    )
    result = compare("sampler", "reward latents", out.latents, nchw_to_nhwc(ref))
    print(result.line(RTOL))
    assert result.ok(RTOL), result.line(RTOL)


def test_reward_condition_changes_the_edit_and_zero_reward_guidance_changes_nothing(reward):
    _, sampler = reward
    images, noise = make_inputs()
    run = dict(num_steps=STEPS, initial_noise=noise)
    best = sampler(images, INSTRUCTIONS, **run)  # default condition: 5, 5, 5 and "None; None; None"
    explicit = sampler(images, INSTRUCTIONS, reward_scores=(5, 5, 5), feedback="None; None; None", **run)
    np.testing.assert_array_equal(best.latents, explicit.latents)
    low = sampler(images, INSTRUCTIONS, reward_scores=(1, 1, 1), **run)
    assert compare("sampler", "scores", low.latents, best.latents).rel > 1e-2
    other_feedback = sampler(images, INSTRUCTIONS, feedback="the cat is missing; None; blurry", **run)
    assert compare("sampler", "feedback", other_feedback.latents, best.latents).rel > 1e-2
    per_example = sampler(images, INSTRUCTIONS, reward_scores=[(5, 5, 5), (1, 1, 1)], **run)
    np.testing.assert_allclose(per_example.latents[0], best.latents[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(per_example.latents[1], low.latents[1], rtol=1e-5, atol=1e-5)

    zero = sampler(images, INSTRUCTIONS, reward_guidance=0.0, **run)  # adds the low-reward branch, scale 0
    # Equal up to float rounding (a batch of 4 branches instead of 3 can change XLA's summation order).
    assert compare("sampler", "zero reward guidance", zero.latents, best.latents).rel < 1e-5
    guided = sampler(images, INSTRUCTIONS, reward_guidance=2.0, **run)
    assert compare("sampler", "reward guidance", guided.latents, best.latents).rel > 1e-2


def test_reward_arguments_are_rejected_for_a_stock_model(stock):
    sampler = EditSampler(*stock.components, SCHEDULER_CONFIG)
    images, _ = make_inputs()
    with pytest.raises(ValueError, match="no reward conditioning"):
        sampler(images, INSTRUCTIONS, reward_scores=(5, 5, 5))
    with pytest.raises(ValueError, match="multiples of 2"):
        sampler(images[:, :15], INSTRUCTIONS)
    assert sampler.compile_count == 0


def test_the_attention_choice_reaches_the_traced_models(stock):
    with pytest.raises(ValueError, match="attention must be one of"):
        EditSampler(*stock.components, SCHEDULER_CONFIG, attention="flash")
    images, _ = make_inputs()
    # cuDNN attention does not exist on CPU: compiling with it fails, so the choice is what gets traced
    # (whatever attention_implementation context the caller is in).
    sampler = EditSampler(
        *stock.components, SCHEDULER_CONFIG, attention="cudnn", compiler_options=FAST_COMPILE
    )
    with pytest.raises(Exception, match="(?i)cudnn|gpu|cuda"):
        sampler(images, INSTRUCTIONS, num_steps=1)
    assert EditSampler(*stock.components, SCHEDULER_CONFIG).attention == "auto_padded"


@pytest.fixture
def backend_compiles():
    """The XLA compilations that happen while the test runs (all of jax's, not only the sampler's)."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def test_compiles_once_per_shape_and_is_deterministic_for_a_seed(stock, backend_compiles):
    sampler = EditSampler(
        *stock.components, SCHEDULER_CONFIG, scheduler="euler_ancestral", compiler_options=FAST_COMPILE
    )
    small, _ = make_inputs(height=16, width=16)
    wide, _ = make_inputs(height=16, width=24)
    first = sampler(small, INSTRUCTIONS, num_steps=2, seed=[1, 2])
    assert sampler.compile_count == 1
    before = len(backend_compiles)
    again = sampler(small, INSTRUCTIONS, num_steps=2, seed=[1, 2])
    assert len(backend_compiles) == before, "a repeated call with the same shapes compiled something"
    np.testing.assert_array_equal(again.images, first.images)
    other = sampler(small, INSTRUCTIONS[::-1], num_steps=2, seed=3, text_guidance=5.0, image_guidance=1.2)
    assert sampler.compile_count == 1  # texts, seeds and guidance scales are inputs, not constants
    assert not np.array_equal(other.latents, first.latents)
    sampler(wide, INSTRUCTIONS, num_steps=2, seed=1)
    assert sampler.compile_count == 2  # images of two sizes compile exactly twice
    sampler(wide, INSTRUCTIONS, num_steps=2, seed=3)
    sampler(small, INSTRUCTIONS, num_steps=2, seed=3)
    assert sampler.compile_count == 2
    # An example's result depends on its own seed only, not on the batch it is sampled in.
    alone = sampler(small[1:], INSTRUCTIONS[1:], num_steps=2, seed=2)
    assert sampler.compile_count == 3
    # (Equal up to float rounding: XLA may sum in another order for another batch size.)
    assert compare("sampler", "batch of one", alone.latents[0], first.latents[1]).rel < 1e-4


def test_bfloat16_sampling_on_a_one_device_mesh_is_close_to_float32(stock):
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    images, noise = make_inputs()
    run = dict(num_steps=STEPS, initial_noise=noise)
    reference = stock.sampler("ddim")(images, INSTRUCTIONS, **run)
    sampler = EditSampler(
        *stock.components,
        SCHEDULER_CONFIG,
        scheduler="ddim",
        dtype=jnp.bfloat16,
        mesh=mesh,
        compiler_options=FAST_COMPILE,
    )
    out = sampler(images, INSTRUCTIONS, **run)
    print(compare("sampler", "bf16 latents", out.latents, reference.latents).line(0.05))
    assert out.latents.dtype == np.float32 and out.images.dtype == np.uint8
    assert compare("sampler", "bf16", out.latents, reference.latents).rel < 0.05


@pytest.mark.parametrize(
    "size, resolution, expected",
    [
        ((512, 512), 512, (512, 512)),
        ((1000, 700), 512, (512, 384)),
        ((150, 70), 64, (128, 64)),
        ((640, 480), 512, (512, 384)),
    ],
)
def test_edit_size_follows_the_official_protocol(size, resolution, expected):
    assert edit_size(*size, resolution) == expected


def test_batch_sharded_over_two_devices_matches_one_device(request):
    if len(jax.devices()) < 2:  # rerun this test in a process with 2 CPU devices (set before jax starts)
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"{__file__}::{request.node.name}",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            timeout=600,
        )
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
        return
    stock = request.getfixturevalue("stock")
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    sharded = EditSampler(*stock.components, SCHEDULER_CONFIG, mesh=mesh, compiler_options=FAST_COMPILE)
    plain = EditSampler(*stock.components, SCHEDULER_CONFIG, compiler_options=FAST_COMPILE)
    images, _ = make_inputs(batch=3)  # padded to 4 over the two devices
    texts = INSTRUCTIONS + ["make it red"]
    expected = plain(images, texts, num_steps=2, seed=[1, 2, 3]).latents
    out = sharded(images, texts, num_steps=2, seed=[1, 2, 3]).latents
    assert out.shape == expected.shape
    assert compare("sampler", "sharded", out, expected).rel < 1e-4
