"""``python -m rewardedit_jax.app`` served on the loopback address and driven in Debian's headless Chromium.

The server runs a tiny random reward pipeline (32 px, 2 steps, one size); the page is used as a person uses
it: upload, sliders, Edit, Sweep, bad uploads, and an edit again afterwards.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fixtures_pipeline import TWO_LEVEL_UNET, save_tiny_ip2p_pipeline
from fixtures_sd import run_module
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MAX_SIDE = 256  # the server's --max-side
WAIT_S = 120


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app")
    return save_tiny_ip2p_pipeline(root / "reward", reward=True, unet=TWO_LEVEL_UNET, unet_seed=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(reward_model, tmp_path_factory):
    """The app serving ``reward_model``; yields its URL once it answers."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(root / "gradio"),
    )
    log_path = root / "app.log"
    argv = ["--model", str(reward_model), "--port", str(port), "--steps", "2", "--aspects", "1:1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewardedit_jax.app", *argv, "--max-side", str(MAX_SIDE)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not answer at {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(`make test` does: apt-get install -y chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


class Page:
    """The app's page in the browser, by the elem_ids rewardedit_jax/app.py gives its controls."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2)
        driver.get(url)
        self.wait.until(lambda d: self.find_all("#upload input[type=file]"))

    def find_all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def status(self) -> str:
        found = self.find_all("#status textarea")
        return found[0].get_attribute("value") if found else ""

    def wait_status(self, start: str) -> str:
        self.wait.until(lambda d: self.status().startswith(start), f"no status {start!r}")
        return self.status()

    def upload(self, path: Path) -> None:
        """Choose ``path`` in the file box (clearing the one shown first)."""
        clear = self.find_all("#upload button[aria-label=Clear]")
        if clear:
            clear[0].click()
            self.wait.until(lambda d: self.find_all("#upload input[type=file]"))
        self.find_all("#upload input[type=file]")[0].send_keys(str(path))

    def set_number(self, elem_id: str, value: float) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.find_all(f"#{elem_id} input[type=number]")[0]
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(f"{value:g}", Keys.TAB)
        self.wait.until(lambda d: float(box.get_attribute("value")) == value)

    def click(self, elem_id: str) -> None:
        self.find_all(f"#{elem_id}")[0].click()

    def images(self, css: str) -> list[np.ndarray]:
        """The images ``css`` shows, downloaded from the server."""
        found = []
        for element in self.find_all(css):
            with urllib.request.urlopen(element.get_attribute("src"), timeout=30) as response:
                found.append(np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")))
        return found


def shrink(shown: np.ndarray, size: int) -> np.ndarray:
    """The page's nearest-neighbour enlargement of a ``size`` x ``size`` edit, undone."""
    factor = shown.shape[0] // size
    assert shown.shape[:2] == (size * factor, size * factor)
    return shown[::factor, ::factor]


def test_the_app_in_a_browser_edits_sweeps_refuses_bad_uploads_and_equals_edit(
    server, browser, reward_model, tmp_path
):
    url, log_path = server
    square = tmp_path / "square.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(square)
    page = Page(browser, url)

    page.upload(square)
    assert page.wait_status("source fitted") == "source fitted to 32x32"
    browser.find_element("css selector", "#instruction textarea").send_keys("make the cat red")
    for elem_id, value in (("following", 1), ("preserving", 2.5), ("quality", 4)):
        page.set_number(elem_id, value)
    page.click("edit")
    assert page.wait_status("edited in"), page.status()
    (shown,) = page.images("#edited img")
    edited = shrink(shown, 32)

    # The same edit by `python -m rewardedit_jax.edit` at the model's recorded resolution, 32: same pixels.
    out = tmp_path / "edit.png"
    argv = ["--model", str(reward_model), "--image", str(square), "--instruction", "make the cat red"]
    result = run_module(
        "rewardedit_jax.edit", *argv, "--reward", "1,2.5,4", "--steps", "2", "--out", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "resolution 32, recorded by the model" in result.stderr
    with Image.open(out) as by_edit:
        np.testing.assert_array_equal(edited, np.asarray(by_edit.convert("RGB")))

    page.click("sweep")
    assert page.wait_status("swept in"), page.status()
    row = [shrink(image, 32) for image in page.images("#sweep-row img")]
    assert len(row) == 5
    assert any(not np.array_equal(row[0], other) for other in row[1:]), "the sweep's images are all equal"

    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    page.upload(notes)
    assert (
        page.wait_status("error:")
        == "error: notes.png is not an image this app can read (PNG, JPEG, WebP, ...)"
    )
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((MAX_SIDE + 44, MAX_SIDE + 44, 3), np.uint8)).save(big)
    page.upload(big)
    assert (
        page.wait_status("error:")
        == f"error: big.png is 300x300 pixels; the limit is {MAX_SIDE} pixels per side"
    )

    # The server goes on serving: the first edit again, now at the default scores 5,5,5 ... after a reload.
    page = Page(browser, url)
    page.upload(square)
    page.wait_status("source fitted")
    page.click("edit")
    assert page.wait_status("edited in"), page.status()
    (again,) = page.images("#edited img")
    assert again.shape == shown.shape and not np.array_equal(shrink(again, 32), edited)
    log = log_path.read_text()
    assert log.count("compiled the sampler") == 2, log  # the warm-up's two, none for a click


def test_without_a_model_or_a_demo_the_app_says_how_to_get_one(tmp_path):
    result = run_module(
        "rewardedit_jax.app", cwd=tmp_path, env={"DEMO_OUT": str(tmp_path / "demo")}, timeout=120
    )
    assert result.returncode == 2 and result.stdout == ""
    export = tmp_path / "demo" / "export_reward"
    assert result.stderr.splitlines() == [
        f"error: no model to serve: run `make demo` (it trains one into {export}) "
        "or pass --model PATH_OR_HUB_ID"
    ]


def test_a_stock_model_hides_the_reward_controls(tmp_path):
    """Reward controls and the sweep are not offered for a stock model (checked on the app's state and
    page without a browser: the page's blocks say which are visible)."""
    from rewardedit_jax import app as app_lib

    model = save_tiny_ip2p_pipeline(tmp_path / "stock", unet=TWO_LEVEL_UNET, unet_seed=3)
    app = app_lib.load_app(str(model), argv=["--steps", "1", "--aspects", "1:1"], log=lambda _: None)
    assert not app.has_reward and app.resolution == 32 and app.sizes == [(32, 32)]
    page = app_lib.build_page(app)
    visible = {
        block.elem_id: block.visible for block in page.blocks.values() if getattr(block, "elem_id", None)
    }
    assert visible["edit"] is True
    assert (
        visible["reward-controls"] is False
        and visible["sweep-controls"] is False
        and visible["sweep-row"] is False
    )
    with pytest.raises(app_lib.AppError, match="not a reward model"):
        app.sweep(np.zeros((32, 32, 3), np.uint8), "x")
    with pytest.raises(app_lib.AppError, match="not a reward model"):
        app.edit(np.zeros((32, 32, 3), np.uint8), "x", reward=(5, 5, 5))


@pytest.mark.parametrize(
    "resolution, multiple, sizes",
    [(512, 64, [(512, 512), (512, 384), (384, 512)]), (16, 1, [(16, 16), (16, 12), (12, 16)])],
)
def test_the_apps_sizes_are_the_sizes_edit_fits_those_aspects_to(resolution, multiple, sizes):
    """Square, 4:3 and 3:4 images are fitted by the app exactly as `edit` fits them."""
    from rewardedit_jax import app as app_lib
    from rewardedit_jax.sampling import edit_size

    aspects = app_lib.parse_aspects(app_lib.DEFAULT_ASPECTS)
    assert app_lib.bucket_sizes(resolution, multiple, aspects) == sizes
    for w, h in aspects:
        assert edit_size(w * 160, h * 160, resolution, multiple) in sizes
    with pytest.raises(app_lib.AppError, match="--aspects must be width:height pairs"):
        app_lib.parse_aspects("4:3,wide")


def test_a_sweep_turns_one_perspective_or_all_three_through_1_to_5():
    from rewardedit_jax import app as app_lib

    app = object.__new__(app_lib.EditApp)  # sweep_scores needs no model
    assert app.sweep_scores("following", (5, 4, 3)) == [(float(v), 4.0, 3.0) for v in range(1, 6)]
    assert app.sweep_scores("all three", (5, 5, 5)) == [(float(v),) * 3 for v in range(1, 6)]
    with pytest.raises(app_lib.AppError, match="sweep must be one of"):
        app.sweep_scores("sharpness", (5, 5, 5))
