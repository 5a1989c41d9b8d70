"""``python -m rewardedit_jax.edit`` end to end on a tiny diffusers InstructPix2Pix pipeline folder."""

import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_pipeline import TWO_LEVEL_UNET, save_tiny_ip2p_pipeline
from fixtures_sd import run_module
from PIL import Image

from rewardedit_jax import edit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A diffusers ``StableDiffusionInstructPix2PixPipeline`` folder written by ``save_pretrained``."""
    root = tmp_path_factory.mktemp("edit_cli")
    return save_tiny_ip2p_pipeline(root / "pipeline", unet=TWO_LEVEL_UNET, unet_seed=3)


@pytest.fixture
def source_image(tmp_path):
    path = tmp_path / "in.png"
    pixels = np.random.default_rng(0).integers(0, 256, (70, 150, 3), dtype=np.uint8)  # 150 wide, 70 high
    Image.fromarray(pixels).save(path)
    return path


def one_edit(model, image, out) -> list[str]:
    """The flags of one edit of ``image`` by ``model`` (instruction "x") written to ``out``."""
    return ["--model", str(model), "--image", str(image), "--instruction", "x", "--out", str(out)]


def run_cli(*args: str):
    return run_module("rewardedit_jax.edit", *args, cwd=REPO)


def test_edit_cli_writes_an_edited_png_of_the_fitted_size(pipeline_dir, source_image, tmp_path):
    out = tmp_path / "results" / "edited.png"
    args = ["--model", str(pipeline_dir), "--image", str(source_image), "--instruction", "make the cat red"]
    result = run_cli(*args, "--out", str(out), "--steps", "2", "--resolution", "64")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as edited:
        assert edited.format == "PNG" and edited.mode == "RGB"
        # 150x70 at resolution 64: short side rounded up to 64, long side floored to a multiple of 64.
        assert edited.size == (128, 64)
    assert sorted(p.name for p in out.parent.iterdir()) == ["edited.png"]  # no temporary file left
    assert "compiled the sampler" in result.stderr and "wrote" in result.stderr


def test_missing_image_is_a_one_line_error(pipeline_dir, tmp_path):
    missing = tmp_path / "nope.jpg"
    result = run_cli(
        "--model", str(pipeline_dir), "--image", str(missing), "--instruction", "x", "--out", "o.png"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such image file"]
    assert result.stdout == ""


def test_missing_model_and_unreadable_image_are_one_line_errors(source_image, tmp_path, capsys):
    out = str(tmp_path / "o.png")

    def error_of(model, image, *more: str) -> str:
        assert (
            edit.main(
                ["--model", str(model), "--image", str(image), "--instruction", "x", "--out", out, *more]
            )
            == 2
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert error_of(tmp_path / "none", source_image) == f"error: {tmp_path / 'none'}: no such model folder"
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image")
    assert error_of(tmp_path, text_file).startswith(f"error: {text_file}: cannot read the image")
    assert "three comma-separated numbers" in error_of(tmp_path, source_image, "--reward", "5,5")
    assert not Path(out).exists()


def test_reward_flags_are_rejected_for_a_stock_model(pipeline_dir, source_image, tmp_path, capsys):
    out = tmp_path / "o.png"
    argv = one_edit(pipeline_dir, source_image, out)
    assert edit.main([*argv, "--reward", "5,5,5", "--resolution", "64"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "not a reward model; --reward" in lines[-1]
    assert not out.exists()


def test_parse_scores():
    assert edit.parse_scores("5,4.5, 3") == (5.0, 4.5, 3.0)
    for bad in ("5,5", "a,b,c", "5,5,6", "nan,1,1"):
        with pytest.raises(edit.EditError):
            edit.parse_scores(bad)


def test_several_edits_go_to_a_folder_and_edit_i_is_seeded_seed_plus_i(pipeline_dir, source_image, tmp_path):
    square = tmp_path / "square.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(square)
    model = ["--model", str(pipeline_dir), "--steps", "1", "--resolution", "64"]
    out = tmp_path / "edits"
    args = ["--image", str(source_image), "--image", str(square), "--instruction", "make the cat red"]
    assert edit.main([*model, *args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000_in.png", "0001_square.png"]
    with Image.open(out / "0000_in.png") as wide, Image.open(out / "0001_square.png") as fitted:
        assert (wide.size, fitted.size) == ((128, 64), (64, 64))  # each image fitted on its own
    # Edit 1 is seeded 42 + 1: the edit a single run with --seed 43 makes (the same per-device batch, 1).
    single = tmp_path / "single.png"
    argv = ["--image", str(square), "--instruction", "make the cat red", "--seed", "43", "--out", str(single)]
    assert edit.main([*model, *argv]) == 0
    assert single.read_bytes() == (out / "0001_square.png").read_bytes()


def test_several_edits_need_matching_counts_and_a_folder(pipeline_dir, source_image, tmp_path, capsys):
    base = ["--model", str(pipeline_dir), "--image", str(source_image), "--image", str(source_image)]
    assert (
        edit.main([*base, "--instruction", "a", "--instruction", "b", "--instruction", "c", "--out", "o"])
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --image is given 2 times and --instruction 3 times; "
        "give one instruction for all images or one per image"
    ]
    out = tmp_path / "o.png"
    assert edit.main([*base, "--instruction", "a", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {out}: 2 edits are written to a folder; give a folder, not a file"
    ]


def test_an_unwritable_out_is_a_one_line_error_before_the_model_is_loaded(
    pipeline_dir, source_image, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, several in ((blocker / "sub" / "o.png", False), (blocker / "edits", True)):
        images = ["--image", str(source_image)] * (2 if several else 1)
        argv = ["--model", str(pipeline_dir), *images, "--instruction", "x", "--out", str(out)]
        assert edit.main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"error: --out {out}: cannot be created: {blocker} is a file, not a folder"]


def test_an_edit_at_the_models_recorded_resolution(pipeline_dir, source_image, tmp_path, capsys):
    """The tiny pipeline records sample_size 16 with a VAE factor of 2: 32 px, sides multiples of 2 (as
    diffusers reads it; below 64 px the official protocol's multiples of 64 cannot hold)."""
    from rewardedit_jax.sampling import edit_size

    assert edit.model_resolution(pipeline_dir) == (32, 2)
    out = tmp_path / "o.png"
    argv = one_edit(pipeline_dir, source_image, out)
    assert edit.main([*argv, "--steps", "1"]) == 0
    assert "fitted to 34x16 (resolution 32, recorded by the model)" in capsys.readouterr().err
    with Image.open(out) as edited:
        assert edited.size == edit_size(150, 70, 32, 2) == (34, 16)


def test_an_edit_too_large_for_memory_is_a_one_line_error_saying_what_fits(pipeline_dir, tmp_path, capsys):
    square = tmp_path / "square.png"
    Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(square)
    out = tmp_path / "o.png"
    argv = one_edit(pipeline_dir, square, out)
    assert edit.main([*argv, "--resolution", "4096"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: an edit at 4096x4096 \(1 per call, 3 guidance branches\) needs about [\d.]+ GB of memory, "
        r"more than the [\d.]+ GB available on this machine \(CPU\); --resolution (\d+) or less would fit "
        r"\(the model was trained at 32\)",
        last,
    ), last
    fits = int(re.search(r"--resolution (\d+)", last).group(1))
    assert 64 <= fits < 4096 and fits % 64 == 0
    assert "compiled the sampler" not in err and not out.exists()


def test_xla_running_out_of_memory_is_a_one_line_error(
    pipeline_dir, source_image, tmp_path, capsys, monkeypatch
):
    """The estimate's fallback: an allocation XLA refuses while sampling."""
    import jax

    from rewardedit_jax import parallel

    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 6 bytes."
        )

    monkeypatch.setattr(parallel, "generate", exhausted)
    out = tmp_path / "o.png"
    argv = one_edit(pipeline_dir, source_image, out)
    assert edit.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: out of memory sampling (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 6 "
        "bytes.); try a smaller --resolution or --batch-size"
    )


def test_the_fitting_constants_are_the_samplers():
    from rewardedit_jax.sampling import sampler as s

    assert (edit.DEFAULT_RESOLUTION, edit.SIZE_MULTIPLE) == (s.DEFAULT_RESOLUTION, s.SIZE_MULTIPLE)
