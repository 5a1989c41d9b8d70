"""The MagicBrush reference metrics: L1/L2 against numpy, DINO against transformers' PyTorch models."""

import json

import numpy as np
import pytest
from fixtures_metrics import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, save_tiny_dino
from PIL import Image

from rewardedit_jax import reference_metrics as rm


def random_image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_l1_l2_are_the_mean_absolute_and_squared_pixel_differences_in_0_1():
    rng = np.random.default_rng(0)
    edited, reference = random_image(rng, 12, 10), random_image(rng, 12, 10)
    l1, l2 = rm.pixel_distances(edited, reference)
    difference = edited.astype(np.float64) / 255 - reference.astype(np.float64) / 255
    np.testing.assert_allclose(l1, np.mean(np.abs(difference)), rtol=1e-12)
    np.testing.assert_allclose(l2, np.mean(difference**2), rtol=1e-12)
    assert rm.pixel_distances(Image.fromarray(edited), Image.fromarray(reference)) == (l1, l2)
    white, black = np.full((4, 6, 3), 255, np.uint8), np.zeros((4, 6, 3), np.uint8)
    assert rm.pixel_distances(white, black) == (1.0, 1.0)
    assert rm.pixel_distances(black, black) == (0.0, 0.0)
    grey = np.full((4, 6, 3), 51, np.uint8)  # 0.2 everywhere
    assert rm.pixel_distances(grey, black) == pytest.approx((0.2, 0.04), abs=1e-15)
    one_channel = black.copy()
    one_channel[0, 0, 1] = 255  # one value of 72 off by 1
    assert rm.pixel_distances(one_channel, black) == pytest.approx((1 / 72, 1 / 72), abs=1e-15)


def test_pixel_distances_need_two_rgb_images_of_one_size():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"one size; got \(12, 10, 3\) and \(10, 12, 3\)"):
        rm.pixel_distances(random_image(rng, 12, 10), random_image(rng, 10, 12))
    with pytest.raises(ValueError, match="RGB"):
        rm.pixel_distances(np.zeros((4, 4)), np.zeros((4, 4)))


def test_an_edit_is_resized_bicubically_to_the_reference_size():
    image = Image.fromarray(random_image(np.random.default_rng(2), 12, 10))
    assert rm.resize_to(image, (10, 12)) is image
    resized = rm.resize_to(image, (5, 6))
    assert resized.size == (5, 6)
    np.testing.assert_array_equal(
        np.asarray(resized), np.asarray(image.resize((5, 6), Image.Resampling.BICUBIC))
    )


def test_cosine_similarity_of_rows():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [6.0, 8.0], [-1.0, -1.0]])
    np.testing.assert_allclose(rm.cosine_similarity(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def imagenet_pixels(images):
    """(N, 3, H, W) float32: pixels / 255 normalized with the ImageNet mean and std (no resize: 32x32 in)."""
    x = np.stack([np.asarray(im, np.float32) / 255.0 for im in images])
    x = (x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return x.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_dino_embedding_is_the_cls_token_of_the_pytorch_models_last_hidden_state(tmp_path, kind):
    import torch
    from transformers import AutoImageProcessor, Dinov2Model, ViTModel

    folder = save_tiny_dino(tmp_path / kind, kind)
    rng = np.random.default_rng(3)
    images = [Image.fromarray(random_image(rng, IMAGE_SIZE, IMAGE_SIZE)) for _ in range(3)]
    scorer = rm.DinoScorer(folder)
    got = scorer.embeddings(images)

    reference_model = (ViTModel if kind == "vit" else Dinov2Model).from_pretrained(str(folder)).eval()
    with torch.no_grad():
        output = reference_model(pixel_values=torch.from_numpy(imagenet_pixels(images)))
    cls = output.last_hidden_state[:, 0].numpy()
    assert got.shape == (3, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, cls, atol=1e-5, rtol=0)
    if kind == "vit":  # the pooler (dense + tanh) is not the DINO embedding
        assert np.abs(output.pooler_output.numpy() - cls).max() > 0.1
    np.testing.assert_allclose(
        scorer.image_embeds(images), cls / np.linalg.norm(cls, axis=-1, keepdims=True), atol=1e-5
    )

    # Other sizes go through the folder's image processor, as with the PyTorch model.
    odd = [Image.fromarray(random_image(rng, 40, 56))]
    pixels = AutoImageProcessor.from_pretrained(str(folder))(images=odd, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = reference_model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(scorer.embeddings(odd), expected, atol=1e-5, rtol=0)
    # Identical images: similarity 1; the similarity is the cosine of the CLS tokens.
    embeds = scorer.image_embeds(images + images[:1])
    assert float(embeds[0] @ embeds[3]) == pytest.approx(1.0, abs=1e-6)
    assert float(embeds[0] @ embeds[1]) == pytest.approx(rm.cosine_similarity(cls[:1], cls[1:2])[0], abs=1e-5)


def test_a_folder_that_is_not_a_dino_model_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(rm.MetricModelError, match=f"^{missing}: no such DINO model folder$"):
        rm.check_dino_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rm.MetricModelError, match="not a transformers model folder .no config.json."):
        rm.check_dino_model(empty)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(rm.MetricModelError, match="not a DINO model .config.json model_type 'clip'; "):
        rm.check_dino_model(clip)
    (clip / "config.json").write_text("{not json")
    with pytest.raises(rm.MetricModelError, match="config.json: not a JSON object"):
        rm.check_dino_model(clip)
    folder = save_tiny_dino(tmp_path / "dino")
    assert rm.check_dino_model(folder) == str(folder.resolve())
    (folder / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(rm.MetricModelError, match=r"no weights \(model.safetensors or pytorch_model.bin\)"):
        rm.check_dino_model(folder)
    (tmp_path / "weights").rename(folder / "model.safetensors")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(rm.MetricModelError, match="no preprocessor_config.json"):
        rm.DinoScorer(folder)
