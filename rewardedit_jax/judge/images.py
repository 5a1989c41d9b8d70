"""Images for the judge: content hashes (cache keys) and base64 data URLs downscaled to a long side.

An image is a file path or a PIL image. Its content hash is the sha256 of the file bytes (or of the decoded
pixels, mode and size for a PIL image), so renaming or copying a file does not invalidate cached judgments
and changing its pixels does. Sending: the image is downscaled (LANCZOS, never upscaled) so its long side is
at most `max_side`, EXIF orientation applied, and encoded as JPEG quality 95; a JPEG or PNG file that already
fits and needs no rotation is sent byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

from PIL import Image, ImageOps

ImageInput = str | os.PathLike | Image.Image

_EXIF_ORIENTATION = 0x0112
_PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}


def describe(image: ImageInput) -> str:
    return "<PIL image>" if isinstance(image, Image.Image) else str(image)


def content_hash(image: ImageInput) -> str:
    """sha256 hex digest of the image content (file bytes, or pixels + mode + size for a PIL image)."""
    h = hashlib.sha256()
    if isinstance(image, Image.Image):
        h.update(f"pil:{image.mode}:{image.width}x{image.height}:".encode())
        h.update(image.tobytes())
    else:
        with open(image, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size sent for an image of (width, height): long side at most `max_side`, aspect kept."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def sent_size(image: ImageInput, max_side: int | None) -> tuple[int, int]:
    """The size an image will be sent at, reading only the file header (for cost estimates)."""
    if isinstance(image, Image.Image):
        return target_size(image.width, image.height, max_side)
    with Image.open(image) as opened:
        return target_size(opened.width, opened.height, max_side)


def to_data_url(image: ImageInput, max_side: int | None) -> str:
    """`data:image/...;base64,...` of the image as the judge sees it."""
    if isinstance(image, Image.Image):
        return _encode(image, max_side)
    path = Path(image)
    with Image.open(path) as opened:
        mime = _PASSTHROUGH_FORMATS.get(opened.format or "")
        fits = max_side is None or max(opened.size) <= max_side
        upright = opened.getexif().get(_EXIF_ORIENTATION, 1) == 1
        if mime and fits and upright and opened.mode in ("RGB", "L"):
            return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        opened.load()
        return _encode(ImageOps.exif_transpose(opened), max_side)


def _encode(image: Image.Image, max_side: int | None) -> str:
    rgb = image.convert("RGB")
    size = target_size(rgb.width, rgb.height, max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=95)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def resized_base64(image: ImageInput, size: tuple[int, int], image_format: str, options: dict) -> str:
    """base64 of the image as the official protocol sends it: RGB, resized to `size`, saved as `image_format`.

    The resize uses Pillow's default filter for RGB images (bicubic), which is what the official eval.py
    gets from `Image.resize(size)`; `options` are the extra `save` keywords (none: Pillow's defaults, e.g.
    JPEG quality 75). EXIF orientation is applied to files.
    """
    if isinstance(image, Image.Image):
        rgb = image.convert("RGB")
    else:
        with Image.open(image) as opened:
            opened.load()
            rgb = ImageOps.exif_transpose(opened).convert("RGB")
    if rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    rgb.save(buffer, format=image_format, **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def upright_size(image: ImageInput) -> tuple[int, int]:
    """(width, height) with EXIF orientation applied, reading only the file header."""
    if isinstance(image, Image.Image):
        return image.size
    with Image.open(image) as opened:
        width, height = opened.size
        if opened.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            return height, width
        return width, height
