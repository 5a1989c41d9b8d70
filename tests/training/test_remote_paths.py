"""gs:// paths end to end against a GCS emulator (tests/fixtures_gcs.py): a training workdir on GCS,
resumed; ``init_from``, ``data.data_dir`` and ``data.latent_cache`` on GCS; ``edit`` and ``evaluate`` with
``--model`` and ``--out`` on GCS; one-line errors for bad remote paths.

What the tests check is read from the emulator's own object listing, so a write that silently went to a
local folder (``./gs:/...``) fails them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from etils import epath
from fixtures_events import tensorboard_scalars
from fixtures_gcs import GcsEmulator
from fixtures_train import REPO, tiny_config
from PIL import Image

from rewardedit_jax import edit
from rewardedit_jax import evaluate as ev
from rewardedit_jax.data import latent_cache
from rewardedit_jax.io import PathError
from rewardedit_jax.training import trainer
from rewardedit_jax.training.sharding import ConfigError
from rewardedit_jax.workdir import flatten_state

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator() as emulator:
        yield emulator
    for root in (Path.cwd(), REPO):  # what a gs:// URL read as a local path would have created
        assert not (root / "gs:").exists(), root


@pytest.fixture(scope="module")
def remote_inputs(gcs, tiny_tokenizer, synthetic_data_dir):
    """(the built synthetic_edit/tiny data_dir, the tokenizer folder), both copied to GCS."""
    return gcs.upload_tree(synthetic_data_dir, "tfds"), gcs.upload_tree(tiny_tokenizer, "tokenizer")


@pytest.fixture(scope="module")
def remote_run(gcs, remote_inputs):
    """A run in gs://.../run with data and tokenizer on GCS: 2 steps, then resumed to 4."""
    data_dir, tokenizer = remote_inputs
    workdir = gcs.url("run")
    options = dict(checkpoint_every_steps=2, log_every_steps=1, log_data_order=True)
    first = trainer.train_and_evaluate(tiny_config(tokenizer, data_dir, total_steps=2, **options), workdir)
    second = trainer.train_and_evaluate(tiny_config(tokenizer, data_dir, total_steps=4, **options), workdir)
    return workdir, first, second


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def _lines(url: str) -> list[str]:
    return epath.Path(url).read_text().splitlines()


def test_a_run_in_a_gcs_workdir_writes_there_and_resumes(remote_run, gcs, tmp_path):
    workdir, first, second = remote_run
    assert first["step"] == 2 and second["step"] == 4
    names = gcs.objects("run/")
    for name in ("config.json", "metrics.jsonl", "data_order.jsonl", "model/rewardedit_model.json"):
        assert f"run/{name}" in names, name
    assert any(n.startswith("run/model/tokenizer/") for n in names)
    assert any(n.startswith("run/model/vae/params/") for n in names)
    steps = {n.split("/")[2] for n in names if n.startswith("run/checkpoints/")}
    assert steps == {"2", "4"}
    for step in steps:
        assert f"run/checkpoints/{step}/commit_success.txt" in names
    events = [n for n in names if n.startswith("run/tensorboard/events.out.tfevents.")]
    assert len(events) == 2  # one per run, both whole: read back by TensorBoard's reader
    for name in events:
        (tmp_path / name.rsplit("/", 1)[1]).write_bytes(epath.Path(gcs.url(name)).read_bytes())
    assert sorted(tensorboard_scalars(tmp_path)["learning/loss"]) == [1, 2, 3, 4]
    # The resumed run kept the first run's lines (object stores cannot append) and went on from step 2.
    assert [json.loads(line)["step"] for line in _lines(f"{workdir}/metrics.jsonl")] == [1, 2, 3, 4]
    assert len(_lines(f"{workdir}/data_order.jsonl")) == 4


def test_init_from_a_gcs_workdir_starts_from_its_ema_weights(remote_run, remote_inputs, tmp_path):
    from flax import nnx

    workdir, _, second = remote_run
    data_dir, tokenizer = remote_inputs
    config = tiny_config(tokenizer, data_dir, init_from=workdir)
    trainer.check_config(config, jax.devices())
    models = trainer.build_models(config, epath.Path(tmp_path / "new"))
    loaded = flatten_state(nnx.state(models.unet, nnx.Param))
    trained = flatten_state(second["state"]["ema"])
    assert loaded.keys() == trained.keys()
    for key, value in trained.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value), err_msg=key)


def test_convert_exports_a_gcs_workdir_to_gcs_and_loads_the_export(remote_run, gcs):
    from rewardedit_jax import convert
    from rewardedit_jax.convert.cli import main as convert_main

    workdir, _, _ = remote_run
    exported = gcs.url("exported")
    assert convert_main(["export", workdir, exported]) == 0
    names = gcs.objects("exported/")
    for name in (
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ):
        assert f"exported/{name}" in names, name
    assert any(n.startswith("exported/tokenizer/") for n in names)
    trained = convert.load_model_component(workdir, "unet")[0]  # the EMA weights, from the checkpoint
    loaded = convert.load_model_component(exported, "unet")[0]  # safetensors, downloaded for reading
    trained, loaded = flatten_state(nnx_params(trained)), flatten_state(nnx_params(loaded))
    assert trained.keys() == loaded.keys()
    for key, value in trained.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value), err_msg=key)


def test_a_latent_cache_written_to_and_trained_from_gcs(remote_run, remote_inputs, gcs, tmp_path):
    import fsspec

    workdir, _, _ = remote_run
    data_dir, tokenizer = remote_inputs
    cache = gcs.url("latents")
    info = latent_cache.precompute(
        f"{workdir}/model", "synthetic_edit/tiny", data_dir=data_dir, out_dir=cache, resolution=32,
        batch_size=16, limit=16, dtype="float32", progress=False,
    )  # fmt: skip
    names = gcs.objects("latents/")
    assert "latents/cache_info.json" in names and f"latents/{info['files'][0]}" in names
    assert info["model_path"] == f"{workdir}/model"
    local = tmp_path / "latents"
    fsspec.filesystem("gcs").get(f"{cache}/", f"{local}/", recursive=True)
    options = dict(global_batch_size=8, seed=1, num_epochs=1, shard_index=0, shard_count=1, read_threads=0)
    remote_batches = list(latent_cache.make_latent_dataset(cache, **options))
    local_batches = list(latent_cache.make_latent_dataset(local, **options))
    assert len(remote_batches) == len(local_batches) == 2
    for a, b in zip(remote_batches, local_batches):
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(
        latent_cache.load_empty_prompt(cache), latent_cache.load_empty_prompt(local)
    )

    config = tiny_config(tokenizer, data_dir, total_steps=1, checkpoint_every_steps=1)
    config.data.latent_cache = cache
    result = trainer.train_and_evaluate(config, tmp_path / "latent_run")
    assert result["step"] == 1 and np.isfinite(result["learning/loss"])


def test_edit_reads_the_model_and_image_from_gcs_and_writes_the_edit_there(remote_run, gcs, capsys):
    workdir, _, _ = remote_run
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    epath.Path(gcs.url("inputs/in.png")).write_bytes(buffer.getvalue())
    out = gcs.url("edits/out.png")
    args = ["--model", workdir, "--image", gcs.url("inputs/in.png"), "--instruction", "red", "--out", out]
    assert edit.main([*args, "--steps", "1", "--resolution", "64"]) == 0, capsys.readouterr().err
    assert gcs.objects("edits/") == ["edits/out.png"]  # one object, no temporary one left
    with Image.open(io.BytesIO(epath.Path(out).read_bytes())) as image:
        assert image.format == "PNG" and image.size == (64, 64)


def test_evaluate_with_model_data_and_out_on_gcs_writes_there_and_resumes(remote_run, remote_inputs, gcs):
    workdir, _, _ = remote_run
    data_dir, _ = remote_inputs
    out = gcs.url("eval")
    options = dict(judge="oracle", limit=2, batch_size=2, steps=1, compiler_options=FAST_COMPILE)
    results = ev.evaluate(workdir, "synthetic_edit", data_dir, out, progress=False, log=None, **options)
    names = gcs.objects("eval/")
    for name in ("results.json", "report.html", "generation.json", "judgments.jsonl"):
        assert f"eval/{name}" in names, name
    for folder in ("images", "inputs", "targets"):
        assert len([n for n in names if n.startswith(f"eval/{folder}/")]) == 2, folder
    assert any(n.startswith("eval/grids/") for n in names)
    assert json.loads(epath.Path(f"{out}/results.json").read_text()) == results
    assert results["config"]["model"] == workdir and results["run"]["generated"] == 2

    again = ev.evaluate(workdir, "synthetic_edit", data_dir, out, progress=False, log=None, **options)
    assert again["run"]["reused_images"] == 2 and again["run"]["generated"] == 0
    assert again["overall"] == results["overall"]
    assert len(_lines(f"{out}/judgments.jsonl")) == 2  # the judgments were reused, not appended again


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_bad_remote_paths_are_one_line_errors_naming_the_path(gcs, remote_inputs, tmp_path, capsys):
    data_dir, tokenizer = remote_inputs
    config = tiny_config(tokenizer, data_dir)
    missing = "gs://no-such-bucket"
    with pytest.raises(PathError, match=f"^{missing}/run: bucket {missing} does not exist$"):
        trainer.train_and_evaluate(config, f"{missing}/run")
    with pytest.raises(PathError, match=r"^memory://run: unsupported URL scheme memory://"):
        trainer.train_and_evaluate(config, "memory://run")
    with pytest.raises(PathError, match=r"^s3://bucket/run: Orbax checkpoints can live only on a local"):
        trainer.train_and_evaluate(config, "s3://bucket/run")
    config.init_from = gcs.url("no-such-run")
    with pytest.raises(ConfigError, match=f"^config.init_from: {gcs.url('no-such-run')} does not exist$"):
        trainer.train_and_evaluate(config, tmp_path / "run")
    config = tiny_config(tokenizer, data_dir)
    config.data.latent_cache = gcs.url("no-such-cache")
    with pytest.raises(ConfigError, match=f"^config.data.latent_cache: {gcs.url('no-such-cache')} is not a"):
        trainer.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()

    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    base = ["--image", str(image), "--instruction", "red"]
    assert edit.main([*base, "--model", gcs.url("run"), "--out", f"{missing}/out.png"]) == 2
    assert f"{missing}/out.png: bucket {missing} does not exist" in _one_line_error(capsys)
    assert edit.main([*base, "--model", gcs.url("no-such-model"), "--out", str(tmp_path / "o.png")]) == 2
    assert f"{gcs.url('no-such-model')}: no such model folder" in _one_line_error(capsys)
    assert edit.main([*base, "--model", "memory://model", "--out", str(tmp_path / "o.png")]) == 2
    assert "memory://model: unsupported URL scheme memory://" in _one_line_error(capsys)
    with pytest.raises(ev.EvaluationError, match=f"^{gcs.url('no-such-model')}: no such model folder$"):
        ev.evaluate(gcs.url("no-such-model"), "synthetic_edit", data_dir, tmp_path / "eval", judge="oracle")
    with pytest.raises(ev.EvaluationError, match=r"--judge gpt needs a local --out"):
        ev.evaluate(gcs.url("run"), "synthetic_edit", data_dir, gcs.url("eval-gpt"), judge="gpt")
    with pytest.raises(latent_cache.LatentCacheError, match=f"^{gcs.url('no-such-cache')}: no latent cache"):
        latent_cache.read_info(gcs.url("no-such-cache"))
