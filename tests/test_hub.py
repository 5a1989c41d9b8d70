"""Hugging Face Hub ids where a model folder is accepted (rewardedit_jax/hub.py), offline.

huggingface_hub has no supported way to fill its cache without the Hub, so the tests lay one out as it
does (``models--owner--name/{blobs,refs,snapshots}``: the layout of its cache guide), check that its own
cache scanner reads it, and point huggingface_hub at it with ``HF_HUB_OFFLINE=1``. huggingface_hub reads
those variables once, at import, so its constants are set too. The Hub itself is faked where a test needs
it to answer; nothing touches the network or the real ~/.cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
from fixtures_pipeline import TWO_LEVEL_UNET, save_tiny_ip2p_pipeline
from huggingface_hub import constants, errors
from PIL import Image

from rewardedit_jax import hub

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

COMMIT_A = hashlib.sha1(b"a").hexdigest()
COMMIT_B = hashlib.sha1(b"b").hexdigest()
TINY = "owner/tiny-ip2p"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in the test's folder, offline, and no id resolved yet."""
    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hub, "_RESOLVED", {})
    return cache


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs=()) -> Path:
    """A snapshot as huggingface_hub caches one: blobs named by content, the snapshot's files relative
    symbolic links to them, and each ref (branch or tag) a file holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


def files_of(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def small_pipeline(scheduler_steps: int = 1000) -> dict[str, bytes]:
    """The files of a pipeline whose scheduler config tells two revisions apart (resolving reads no
    weights)."""
    return {
        "model_index.json": b'{"_class_name": "StableDiffusionInstructPix2PixPipeline"}',
        "scheduler/scheduler_config.json": json.dumps({"num_train_timesteps": scheduler_steps}).encode(),
        "unet/config.json": b"{}",
    }


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    return save_tiny_ip2p_pipeline(root / "pipeline", unet=TWO_LEVEL_UNET, unet_seed=3)


@pytest.fixture
def cached_tiny(hub_cache, tiny_pipeline) -> Path:
    """The tiny pipeline as ``owner/tiny-ip2p`` (main: COMMIT_A) in the cache; its snapshot folder."""
    return add_snapshot(hub_cache, TINY, COMMIT_A, files_of(tiny_pipeline), refs=["main"])


# --- what is a Hub id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("owner/name", ("owner/name", None)),
        ("timbrooks/instruct-pix2pix", ("timbrooks/instruct-pix2pix", None)),
        ("owner/name@v1.0", ("owner/name", "v1.0")),
        ("owner/name@refs/pr/1", ("owner/name", "refs/pr/1")),
        (f"owner/name@{COMMIT_A}", ("owner/name", COMMIT_A)),
        ("Org_1/model.v2-fp16", ("Org_1/model.v2-fp16", None)),
        ("name", None),  # a legacy id without owner: a local folder name
        ("a/b/c", None),
        ("/abs/owner/name", None),
        ("./owner/name", None),
        ("~/name", None),
        ("gs://bucket/name", None),
        ("owner/name@", None),
        ("owner/-name", None),
        ("own--er/name", None),
        ("owner/na..me", None),
        ("owner/name@a..b", None),
        ("owner/name@a b", None),
    ],
)
def test_hub_ids_are_owner_name_with_an_optional_revision(text, parsed):
    assert hub.parse_hub_id(text) == parsed


def test_an_existing_relative_folder_named_like_an_id_is_a_path(tmp_path, monkeypatch):
    from rewardedit_jax.convert import ConversionError, load_pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert hub.parse_hub_id("owner/name") is None
    assert hub.resolve("owner/name") is None and hub.local_folder("owner/name") == "owner/name"
    # A path object is a path even when no such folder exists.
    assert hub.parse_hub_id(Path("other/name")) is None
    # The loaders read the folder; they never ask the Hub (offline, the cache empty: that would be an error
    # about the cache).
    with pytest.raises(ConversionError, match=r"^owner/name: neither a diffusers folder"):
        load_pipeline("owner/name")


# --- what is downloaded -------------------------------------------------------------------------------

SD15_LIKE = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "v1-5-pruned.ckpt",
    "v1-5-pruned.safetensors",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/flax_model.msgpack",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_flax_model.msgpack",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.bin",
    "onnx/unet/model.onnx",
]


def test_only_what_the_loaders_read_is_downloaded():
    assert hub.pipeline_files(SD15_LIKE) == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",  # no safetensors: the plain .bin, not its variant
    ]
    # Sharded weights come with their index; a folder with only a variant gets the variant.
    sharded = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json"] + [
        f"unet/diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)
    ]
    assert hub.pipeline_files(sharded + ["vae/diffusion_pytorch_model.fp16.safetensors"]) == sorted(
        sharded + ["vae/diffusion_pytorch_model.fp16.safetensors"]
    )
    # A single U-Net repository: its weights are at the top.
    assert hub.pipeline_files(["config.json", "diffusion_pytorch_model.safetensors", "model.ckpt"]) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    # A Flax model directory: its Orbax checkpoints whole.
    flax = ["rewardedit_model.json", "unet/config.json", "unet/params/_METADATA", "unet/params/d/0a", "x.bin"]
    assert hub.pipeline_files(flax) == sorted(flax[:-1])


def test_the_hub_module_knows_the_converters_components():
    from rewardedit_jax.convert import model_dir, pipeline

    assert hub.COMPONENTS == pipeline.COMPONENTS
    assert hub.FLAX_MANIFEST == model_dir.MODEL_FILE


# --- resolving from the cache (HF_HUB_OFFLINE=1) --------------------------------------------------------


def test_a_hub_id_resolves_from_the_offline_cache_and_loads(cached_tiny, hub_cache, capsys):
    from rewardedit_jax.convert import load_pipeline

    # huggingface_hub's own scanner reads the cache laid out here.
    (repo,) = huggingface_hub.scan_cache_dir(hub_cache).repos
    assert repo.repo_id == TINY and [r.commit_hash for r in repo.revisions] == [COMMIT_A]
    assert set(repo.refs) == {"main"}

    found = hub.resolve(TINY)
    assert found == hub.HubModel(repo_id=TINY, revision=None, commit=COMMIT_A, folder=str(cached_tiny))
    assert found.pinned == f"{TINY}@{COMMIT_A}"
    assert capsys.readouterr().err == f"hub: {TINY} is commit {COMMIT_A} ({cached_tiny})\n"
    pipeline = load_pipeline(TINY)  # resolved once per process: nothing logged again
    assert str(pipeline.path) == str(cached_tiny) and capsys.readouterr().err == ""
    assert (
        pipeline.unet.config.block_out_channels == (32, 64) and pipeline.scheduler_config["steps_offset"] == 1
    )
    # The pinned id names the same snapshot.
    assert hub.local_folder(found.pinned) == str(cached_tiny)


def test_a_revision_pins_a_branch_tag_or_commit(hub_cache):
    folder_a = add_snapshot(hub_cache, "owner/name", COMMIT_A, small_pipeline(1000), refs=["main"])
    folder_b = add_snapshot(hub_cache, "owner/name", COMMIT_B, small_pipeline(500), refs=["v2", "refs/pr/3"])

    def steps(spec: str) -> int:
        folder = Path(hub.local_folder(spec))
        return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"]

    assert hub.local_folder("owner/name") == str(folder_a) and steps("owner/name") == 1000
    found = hub.resolve("owner/name@v2")
    assert (found.revision, found.commit, found.folder) == ("v2", COMMIT_B, str(folder_b))
    assert steps("owner/name@v2") == steps("owner/name@refs/pr/3") == steps(f"owner/name@{COMMIT_B}") == 500
    assert steps(f"owner/name@{COMMIT_A}") == 1000
    with pytest.raises(hub.HubError) as error:
        hub.resolve("owner/name@v3")
    assert str(error.value) == (
        f"owner/name@v3: no such local folder, and not in the local Hugging Face cache {hub_cache} and "
        "HF_HUB_OFFLINE=1 is set"
    )


def test_a_missing_hub_id_is_a_one_line_edit_error_before_anything_loads(hub_cache, tmp_path, capsys):
    from rewardedit_jax import edit

    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["--model", "stabilityai/xyz", "--image", str(image), "--instruction", "x"]
    assert edit.main([*argv, "--out", str(tmp_path / "out.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: stabilityai/xyz: no such local folder, and not in the local Hugging Face cache {hub_cache} "
        "and HF_HUB_OFFLINE=1 is set"
    ]
    assert captured.out == "" and not (tmp_path / "out.png").exists()
    # The other flags are checked first: a bad one is reported without looking the id up.
    assert edit.main([*argv, "--out", str(tmp_path / "out.png"), "--steps", "0"]) == 2
    assert capsys.readouterr().err == "error: --steps must be positive; got 0\n"


def test_the_edit_command_reads_the_cache_and_offline_mode_from_the_environment(hub_cache, tmp_path):
    """The variables alone, in a new process (the constants set above are this process's only)."""
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))  # HF_* set by the hub_cache fixture
    argv = ["--model", "owner/missing@v1", "--image", str(image), "--instruction", "x", "--out", "o.png"]
    result = subprocess.run(
        [sys.executable, "-m", "rewardedit_jax.edit", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: owner/missing@v1: no such local folder, and not in the local Hugging Face cache {hub_cache} "
        "and HF_HUB_OFFLINE=1 is set"
    ]


def test_evaluate_records_the_hub_id_pinned_to_its_commit(hub_cache, tmp_path):
    from rewardedit_jax.evaluate import EvalSettings
    from rewardedit_jax.evaluators import EvaluationError

    add_snapshot(hub_cache, "owner/name", COMMIT_A, small_pipeline(), refs=["main"])
    data = tmp_path / "data"
    (data / "synthetic_edit" / "tiny" / "1.0.0").mkdir(parents=True)
    (data / "synthetic_edit" / "tiny" / "1.0.0" / "dataset_info.json").write_text("{}")

    def create(model, **options):
        return EvalSettings.create(model, "synthetic_edit", data, tmp_path / "out", judge="none", **options)

    settings = create("owner/name", progress=False)
    assert settings.model == f"owner/name@{COMMIT_A}" and settings.model_step is None
    assert settings.generation("synthetic_edit/tiny/1.0.0").as_dict()["model"] == f"owner/name@{COMMIT_A}"
    with pytest.raises(EvaluationError, match=r"^owner/missing: no such local folder, and not in the local"):
        create("owner/missing")
    with pytest.raises(EvaluationError, match=r"^--steps must be at least 1"):  # checked before the id
        create("owner/missing", steps=0)


def test_convert_import_records_the_pinned_id(cached_tiny, tmp_path, capsys):
    from rewardedit_jax.convert import cli, model_dir

    assert cli.main(["import", TINY, str(tmp_path / "flax")]) == 0
    manifest = model_dir.read_manifest(tmp_path / "flax")
    assert manifest["source"] == f"{TINY}@{COMMIT_A}" and "unet" in manifest["components"]
    assert cli.main(["import", "owner/missing", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: owner/missing: no such local folder")
    assert not (tmp_path / "other").exists()


def test_training_starts_from_a_hub_id(cached_tiny, tmp_path):
    from configs import test_tiny
    from rewardedit_jax.training.trainer import build_models, check_config

    config = test_tiny.get_config()
    config.init_from = TINY
    check_config(config, 1)
    models = build_models(config, tmp_path / "workdir")
    assert models.unet.config.block_out_channels == (32, 64) and models.unet_config["in_channels"] == 8
    config.init_from = "owner/missing"
    with pytest.raises(hub.HubError, match=r"^owner/missing: no such local folder"):
        check_config(config, 1)


# --- downloading (the Hub faked) --------------------------------------------------------------------------


class FakeHub:
    """``HfApi.model_info`` and ``snapshot_download`` answering for one repository, online, or failing with
    ``info_error`` / ``download_error``; reads of the local cache go to huggingface_hub itself."""

    def __init__(self, files: dict[str, bytes], info_error=None, download_error=None):
        self.files, self.info_error, self.download_error = files, info_error, download_error
        self.downloads, self.tokens = [], []
        self.real_snapshot_download = huggingface_hub.snapshot_download

    def model_info(self, repo_id, *, revision=None, files_metadata=False):
        if self.info_error is not None:
            raise self.info_error
        siblings = [SimpleNamespace(rfilename=n, size=len(d)) for n, d in self.files.items()]
        return SimpleNamespace(sha=COMMIT_A, siblings=siblings)

    def snapshot_download(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None, **options):
        if options.get("local_files_only"):
            return self.real_snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns, **options
            )
        self.downloads.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        self.tokens.append(options.get("token"))
        if self.download_error is not None:
            raise self.download_error
        wanted = {n: d for n, d in self.files.items() if n in allow_patterns}
        return str(add_snapshot(Path(cache_dir), repo_id, COMMIT_A, wanted, refs=[revision or "main"]))


def http_error(kind, status: int):
    return kind(f"{status} error", response=SimpleNamespace(headers={}, request=None, status_code=status))


@pytest.fixture
def online(monkeypatch, hub_cache):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_logged")

    def install(files: dict[str, bytes], **fail) -> FakeHub:
        fake = FakeHub(files, **fail)
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fake.model_info)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
        return fake

    return install


def test_a_download_fetches_the_selection_and_prints_where_it_starts_and_ends(online, hub_cache, capsys):
    files = {**small_pipeline(), "v1.ckpt": b"x" * 1000, "unet/diffusion_pytorch_model.safetensors": b"w"}
    fake = online(files)
    found = hub.resolve("owner/name@main")
    assert found.commit == COMMIT_A and Path(found.folder).is_dir()
    assert fake.downloads == [
        {"repo_id": "owner/name", "revision": "main", "allow_patterns": hub.pipeline_files(files)}
    ]
    assert not (Path(found.folder) / "v1.ckpt").exists()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        f"hub: downloading owner/name@main (revision main, commit {COMMIT_A}): 4 files, 0.0 MB, "
        f"into {hub_cache}"
    )
    assert lines[1].startswith("hub: downloaded owner/name@main in ") and lines[1].endswith(" s (0.0 MB)")
    assert lines[2:] == [f"hub: owner/name@main is commit {COMMIT_A} ({found.folder})"]
    assert "hf_secret" not in "".join(lines)
    assert fake.tokens == ["hf_secret_never_logged"]  # the token comes from the environment only
    # Resolved once per process; a new process finds every file cached and downloads nothing.
    assert hub.resolve("owner/name@main") == found and len(fake.downloads) == 1
    hub._RESOLVED.clear()
    hub.resolve("owner/name@main")
    assert capsys.readouterr().err.splitlines() == lines[2:]


def test_without_hf_token_no_token_is_sent_not_even_a_saved_one(online, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    fake = online(small_pipeline())
    hub.resolve("owner/name@main")
    assert fake.tokens == [False]  # huggingface_hub's "send none" (it would otherwise read a saved token)


@pytest.mark.parametrize(
    "fail, reason",
    [
        (
            {"info_error": http_error(errors.RepositoryNotFoundError, 404)},
            "no such local folder, and not found on the Hugging Face Hub (a private model needs HF_TOKEN)",
        ),
        (
            {"info_error": http_error(errors.RevisionNotFoundError, 404)},
            "revision 'v9' not found on the Hugging Face Hub",
        ),
        (
            {"info_error": OSError("network unreachable")},
            "no such local folder, and cannot reach the Hugging Face Hub (OSError: network unreachable), and "
            "it is not in the local Hugging Face cache {cache}",
        ),
        (
            {"download_error": http_error(errors.GatedRepoError, 403)},
            "download failed (a gated model: accept its conditions on huggingface.co and set HF_TOKEN)",
        ),
    ],
)
def test_a_hub_id_that_cannot_be_resolved_is_one_line_naming_it(online, hub_cache, fail, reason):
    online(small_pipeline(), **fail)
    with pytest.raises(hub.HubError) as raised:
        hub.resolve("owner/name@v9")
    assert str(raised.value) == "owner/name@v9: " + reason.format(cache=hub_cache)


def test_the_cache_serves_when_the_hub_cannot_be_reached(online, hub_cache, capsys):
    folder = add_snapshot(hub_cache, "owner/name", COMMIT_A, small_pipeline(), refs=["main"])
    fake = online({}, info_error=OSError("network unreachable"))
    assert hub.resolve("owner/name").folder == str(folder) and fake.downloads == []
    assert capsys.readouterr().err.splitlines() == [
        "hub: owner/name: cannot reach the Hugging Face Hub (OSError: network unreachable); using the local "
        "Hugging Face cache",
        f"hub: owner/name is commit {COMMIT_A} ({folder})",
    ]


# --- evaluate's scoring models ---------------------------------------------------------------------------


def test_evaluate_takes_hub_ids_for_the_clip_and_dino_models(hub_cache, tmp_path, capsys):
    from rewardedit_jax.evaluate import EvalSettings, main
    from rewardedit_jax.evaluators import EvaluationError

    # A transformers repository: a download takes its configs, tokenizer files and safetensors weights only.
    listing = ["config.json", "preprocessor_config.json", "vocab.json", "merges.txt", "model.safetensors"]
    assert hub.pipeline_files([*listing, "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"]) == sorted(
        listing
    )
    clip = add_snapshot(hub_cache, "owner/clip", COMMIT_A, {name: b"{}" for name in listing}, refs=["main"])
    dino_files = {
        "config.json": b'{"model_type": "vit"}',
        "preprocessor_config.json": b"{}",
        "model.safetensors": b"weights",
    }
    dino = add_snapshot(hub_cache, "owner/dino", COMMIT_B, dino_files, refs=["v1"])
    data = tmp_path / "data"
    (data / "synthetic_edit" / "tiny" / "1.0.0").mkdir(parents=True)
    (data / "synthetic_edit" / "tiny" / "1.0.0" / "dataset_info.json").write_text("{}")
    (tmp_path / "model").mkdir()

    def create(**options):
        return EvalSettings.create(tmp_path / "model", "synthetic_edit", data, tmp_path / "out", **options)

    settings = create(clip_model="owner/clip", dino_model="owner/dino@v1", judge="none")
    assert (settings.clip_model, settings.dino_model) == (str(clip), str(dino))
    # A revision that is not a DINO model is refused as a local folder would be.
    add_snapshot(hub_cache, "owner/dino", COMMIT_A, {"config.json": b'{"model_type": "clip"}'}, refs=["v0"])
    with pytest.raises(EvaluationError, match=r": not a DINO model \(config.json model_type 'clip'"):
        create(dino_model="owner/dino@v0", judge="none")
    # Every other flag is checked before the id is looked up.
    with pytest.raises(EvaluationError, match=r"^--steps must be at least 1"):
        create(clip_model="owner/missing", steps=0)
    capsys.readouterr()
    argv = ["--model", str(tmp_path / "model"), "--benchmark", "synthetic_edit", "--data-dir", str(data)]
    argv += ["--out", str(tmp_path / "out"), "--judge", "none", "--no-progress"]
    for flag in ("--clip-model", "--dino-model"):
        assert main([*argv, flag, "owner/missing@v2"]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {flag} owner/missing@v2: no such local folder, and not in the local Hugging Face cache "
            f"{hub_cache} and HF_HUB_OFFLINE=1 is set"
        ]
    assert not (tmp_path / "out").exists()
