"""Tiny random DINO models (transformers ``ViTModel`` / ``Dinov2Model``, image processor) in a folder."""

from pathlib import Path

IMAGE_SIZE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save_tiny_dino(folder: Path, kind: str = "vit", seed: int = 0) -> Path:
    """A random 2-layer, width-32 DINO-style model for 32x32 images in ``folder`` (safetensors weights).

    ``vit``: a ``ViTModel`` (with its pooler, as DINO checkpoints on the hub are saved) and a
    ``ViTImageProcessor`` resizing to 32x32; ``dinov2``: a ``Dinov2Model`` and a ``BitImageProcessor``
    (shortest edge 32, centre crop 32), both normalizing with the ImageNet mean and std.
    """
    import torch
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(seed)
    common = dict(
        image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    if kind == "vit":
        model = ViTModel(ViTConfig(intermediate_size=37, **common))
        processor = ViTImageProcessor(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
        )
    elif kind == "dinov2":
        model = Dinov2Model(Dinov2Config(mlp_ratio=2, **common))
        processor = BitImageProcessor(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            do_convert_rgb=True,
        )
    else:
        raise ValueError(f"kind must be vit or dinov2, not {kind!r}")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)
