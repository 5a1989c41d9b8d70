"""Images for the judge: content hashes and size-capped data URLs."""

import base64
import io
import shutil

from PIL import Image

from rewardedit_jax.judge.images import content_hash, sent_size, to_data_url


def _decode(url: str) -> Image.Image:
    header, payload = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_large_image_is_downscaled_to_max_side(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1000, 500), (10, 20, 30)).save(path)
    url = to_data_url(str(path), max_side=256)
    assert url.startswith("data:image/jpeg;base64,")
    assert _decode(url).size == (256, 128)
    assert sent_size(str(path), 256) == (256, 128)
    assert _decode(to_data_url(str(path), max_side=None)).size == (1000, 500)


def test_small_png_file_is_sent_byte_for_byte(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 0, 0)).save(path)
    url = to_data_url(str(path), max_side=512)
    assert url == "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_pil_images_are_encoded_and_never_upscaled():
    image = Image.new("RGBA", (100, 60), (0, 0, 255, 128))
    assert _decode(to_data_url(image, max_side=512)).size == (100, 60)
    assert _decode(to_data_url(image, max_side=50)).size == (50, 30)


def test_content_hash_follows_content_not_name(tmp_path):
    first = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(first)
    copy = tmp_path / "copy.png"
    shutil.copyfile(first, copy)
    other = tmp_path / "b.png"
    Image.new("RGB", (8, 8), (1, 2, 4)).save(other)
    assert content_hash(str(first)) == content_hash(str(copy)) != content_hash(str(other))
    assert content_hash(Image.new("RGB", (8, 8))) != content_hash(Image.new("RGB", (8, 9)))
