"""Image bytes for datasets: checking that an image decodes, storing it, and decoding it for training.

Build time: `checked_image_bytes` returns the bytes to store for an image file or an image blob. An RGB
JPEG or PNG is stored byte for byte (no re-encoding of the InstructPix2Pix JPEGs); anything else (palette,
grayscale, alpha, EXIF-rotated, other formats) is converted to RGB and stored as PNG. An image that does not
decode completely raises `Skip("unreadable_image")`.

Read time: `decode_resized` decodes to RGB uint8 at a target size. For a JPEG it lets libjpeg decode at a
reduced DCT scale first (`Image.draft`, a power of two no smaller than the target) before the resize, which
is several times faster than decoding 512x512 and then resizing to 256x256, and barely different.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rewardedit_jax.data import validation

_EXIF_ORIENTATION = 0x0112
_STORE_AS_IS = ("JPEG", "PNG")


def _open_checked(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            # A reduced-scale decode still reads every entropy-coded segment, so truncation and corrupt data
            # are detected at a fraction of the cost of a full decode.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise validation.Skip(validation.UNREADABLE_IMAGE, f"{what}: {e}") from None
    if image.width < 1 or image.height < 1:
        raise validation.Skip(validation.UNREADABLE_IMAGE, f"{what}: empty image")
    return image


def checked_image_bytes(data: bytes | None, what: str = "image") -> bytes:
    """Bytes to store for an encoded image; raises `Skip` if it is missing or does not decode."""
    if not data:
        raise validation.Skip(validation.MISSING_IMAGE, f"{what}: no bytes")
    image = _open_checked(data, what)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if image.format == "JPEG" else 1
    if image.format in _STORE_AS_IS and image.mode == "RGB" and orientation in (0, 1):
        return data
    # Re-open at full resolution for the conversion (the check above may have used a reduced-scale decode).
    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    except (OSError, ValueError) as e:
        raise validation.Skip(validation.UNREADABLE_IMAGE, f"{what}: {e}") from None
    return encode_png(np.asarray(image))


def read_checked_image(path: str | os.PathLike, what: str | None = None) -> bytes:
    """`checked_image_bytes` of a file; a missing file raises `Skip("missing_image")`.

    `what` names the file in skip reasons (default: the path).
    """
    what = os.fspath(path) if what is None else what
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise validation.Skip(validation.MISSING_IMAGE, what) from None
    except IsADirectoryError:
        raise validation.Skip(validation.MISSING_IMAGE, f"{what} is a directory") from None
    except OSError as e:
        raise validation.Skip(validation.UNREADABLE_IMAGE, f"{what}: {e}") from None
    return checked_image_bytes(data, what)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) array (lossless; level 1 is fast and small enough)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) of encoded image bytes, full resolution."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def decode_resized(data: bytes, size: int | tuple[int, int], *, fast_jpeg: bool = True) -> np.ndarray:
    """RGB uint8 (height, width, 3) of encoded image bytes resized (aspect not kept) with bicubic filtering.

    `size` is an int (square) or (height, width). With `fast_jpeg`, a JPEG is decoded at the smallest
    power-of-two DCT scale that is still at least `size` before resizing.
    """
    height, width = (size, size) if isinstance(size, int) else size
    with Image.open(io.BytesIO(data)) as image:
        if fast_jpeg and image.format == "JPEG":
            image.draft("RGB", (width, height))
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        return np.asarray(image)
