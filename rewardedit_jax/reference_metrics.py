"""Reference metrics of an edit against its ground truth, as MagicBrush defines them.

MagicBrush (Zhang et al., NeurIPS 2023 Datasets and Benchmarks, arXiv:2306.10012, its quantitative
evaluation and `evaluation/image_eval.py`) scores an edited image against the ground-truth edit (the
*reference*) with five numbers; :mod:`rewardedit_jax.evaluate` reports them beside the judge, per edit and
as means overall and per edit type:

- ``l1`` / ``l2``: the mean absolute / mean squared difference of the RGB pixels of the edit and the
  reference, both scaled to [0, 1], over every pixel and channel. The edit is compared at the reference's
  size (bicubic resize when it was generated at another size, as MagicBrush's script does). Lower is better.
- ``clip_i``: the cosine similarity of the CLIP image embeddings of the edit and the reference.
- ``dino``: the cosine similarity of the DINO embeddings of the edit and the reference; a DINO embedding is
  the CLS token of the ViT's last hidden state (after the final layer norm), as returned by the DINO
  ViT-S/16 MagicBrush used.
- ``clip_t``: the cosine similarity of the CLIP embeddings of the edit and of a text describing the
  intended result (MagicBrush: the caption of the target image). The benchmarks here have no such caption,
  so the evaluator uses the edit instruction.

The CLIP and DINO models are local transformers folders, run with PyTorch on the host CPU (as
``ClipScorer`` has always run CLIP): a ``CLIPModel`` folder with its tokenizer and image processor
(``--clip-model``), and a ``ViTModel`` (e.g. ``facebook/dino-vits16``) or ``Dinov2Model`` folder with its
image processor (``--dino-model``). Images are prepared by the folder's own image processor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Model types a --dino-model folder may have (config.json "model_type") -> transformers class name.
DINO_MODEL_CLASSES = {"vit": "ViTModel", "dinov2": "Dinov2Model"}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class MetricModelError(ValueError):
    """A metric model folder that cannot be used; the message is one line naming the folder."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


# ----------------------------------------------------------------------------------------------------
# Pixel distances.


def resize_to(image, size: tuple[int, int]):
    """``image`` (PIL) at ``size`` (width, height): unchanged if it has that size, else bicubic-resized."""
    from PIL import Image

    return image if image.size == tuple(size) else image.resize(tuple(size), Image.Resampling.BICUBIC)


def pixel_distances(edited, reference) -> tuple[float, float]:
    """(L1, L2): mean |edited - reference| and mean (edited - reference)^2 of uint8 RGB images in [0, 1].

    Both are (H, W, 3) arrays (or PIL images) of the same size; resize the edit first (``resize_to``).
    """
    edited = np.asarray(edited)
    reference = np.asarray(reference)
    if edited.shape != reference.shape or edited.ndim != 3 or edited.shape[-1] != 3:
        raise ValueError(f"need two RGB images of one size; got {edited.shape} and {reference.shape}")
    diff = edited.astype(np.float64) / 255.0 - reference.astype(np.float64) / 255.0
    return float(np.abs(diff).mean()), float((diff**2).mean())


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays of embeddings."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------------
# CLIP.


class ClipScorer:
    """Unit-norm CLIP embeddings of images and texts with transformers' ``CLIPModel`` from a local folder."""

    def __init__(self, path: str | os.PathLike):
        try:
            import torch
            from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
        except ImportError as e:
            raise MetricModelError(f"--clip-model needs torch and transformers ({e})") from None
        try:
            self.model = CLIPModel.from_pretrained(str(path)).eval()
            self.processor = CLIPImageProcessor.from_pretrained(str(path))
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise MetricModelError(f"{path}: cannot load a CLIP model ({_one_line(e)})") from None
        self.torch = torch

    @staticmethod
    def _features(output):
        return output.pooler_output if hasattr(output, "pooler_output") else output

    def image_embeds(self, images) -> np.ndarray:
        with self.torch.no_grad():
            pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
            features = self._features(self.model.get_image_features(pixel_values=pixels))
            return _unit(features.float().numpy())

    def text_embeds(self, texts: Sequence[str]) -> np.ndarray:
        max_length = min(77, self.model.config.text_config.max_position_embeddings)
        with self.torch.no_grad():
            tokens = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            return _unit(self._features(features).float().numpy())


# ----------------------------------------------------------------------------------------------------
# DINO.


def check_dino_model(path: str | os.PathLike) -> str:
    """The absolute path of a usable ``--dino-model`` folder; ``MetricModelError`` (one line) otherwise.

    Checked without loading anything (before generation): the folder exists and holds a ``config.json``
    whose ``model_type`` is ``vit`` or ``dinov2``, a ``preprocessor_config.json`` and the weights.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise MetricModelError(f"{folder}: no such DINO model folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MetricModelError(f"{folder}: not a transformers model folder (no config.json)")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as e:
        raise MetricModelError(f"{config_path}: not a JSON object ({_one_line(e)})") from None
    if model_type not in DINO_MODEL_CLASSES:
        raise MetricModelError(
            f"{folder}: not a DINO model (config.json model_type {model_type!r}; --dino-model needs a "
            "transformers ViTModel or Dinov2Model folder, e.g. facebook/dino-vits16)"
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise MetricModelError(f"{folder}: no preprocessor_config.json (the DINO model's image processor)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise MetricModelError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    return str(folder)


class DinoScorer:
    """DINO image embeddings (the CLS token of the last hidden state) from a local transformers folder."""

    def __init__(self, path: str | os.PathLike):
        path = check_dino_model(path)
        try:
            import torch
            import transformers
        except ImportError as e:
            raise MetricModelError(f"--dino-model needs torch and transformers ({e})") from None
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            model_type = json.load(f)["model_type"]
        model_class = getattr(transformers, DINO_MODEL_CLASSES[model_type])
        # A ViT's pooler (dense + tanh) is not part of DINO's embedding; do not build it.
        extra = {"add_pooling_layer": False} if model_type == "vit" else {}
        try:
            self.model = model_class.from_pretrained(path, **extra).eval()
            self.processor = transformers.AutoImageProcessor.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise MetricModelError(f"{path}: cannot load a DINO model ({_one_line(e)})") from None
        self.torch = torch
        self.path = path

    def embeddings(self, images) -> np.ndarray:
        """(N, hidden) float32 CLS embeddings of PIL RGB images (not normalized)."""
        with self.torch.no_grad():
            pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
            hidden = self.model(pixel_values=pixels.to(self.model.dtype)).last_hidden_state
            return hidden[:, 0].float().numpy()

    def image_embeds(self, images) -> np.ndarray:
        """Unit-norm CLS embeddings (their dot product is the cosine similarity)."""
        return _unit(self.embeddings(images))
