"""Whole Stable Diffusion pipelines: diffusers folder <-> Flax model directory, and ``load_pipeline``.

A pipeline is ``unet/``, ``vae/``, ``text_encoder/`` (models, converted), ``tokenizer/`` and
``scheduler/`` (configuration files, copied verbatim) and ``model_index.json``. Exports load with
``diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained`` (stock U-Net) or
``rewardedit_jax.torch_compat.RewardEditPipeline.from_pretrained`` (reward U-Net).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etils import epath

from rewardedit_jax import hub
from rewardedit_jax.convert import clip_text, model_dir, unet, vae
from rewardedit_jax.convert.weights import ConversionError, read_json, write_json
from rewardedit_jax.io import absolute, local_copy, to_path
from rewardedit_jax.schedule import NoiseSchedule, ScheduleError


@dataclasses.dataclass(frozen=True)
class ModelComponent:
    load_diffusers: Callable[..., tuple[Any, dict]]
    save_diffusers: Callable[[Any, Path, dict | None], None]
    load_flax: Callable[..., tuple[Any, dict]]
    save_flax: Callable[[Any, Path, dict | None], None]


MODELS = {
    "unet": ModelComponent(
        unet.load_diffusers_unet, unet.save_diffusers_unet, unet.load_flax_unet, unet.save_flax_unet
    ),
    "vae": ModelComponent(
        vae.load_diffusers_vae, vae.save_diffusers_vae, vae.load_flax_vae, vae.save_flax_vae
    ),
    "text_encoder": ModelComponent(
        clip_text.load_diffusers_text_encoder,
        clip_text.save_diffusers_text_encoder,
        clip_text.load_flax_text_encoder,
        clip_text.save_flax_text_encoder,
    ),
}
FILES = ("tokenizer", "scheduler")
COMPONENTS = tuple(MODELS) + FILES
PIPELINE_CLASS = "StableDiffusionInstructPix2PixPipeline"
REWARD_UNET_ENTRY = ["rewardedit_jax.torch_compat", "RewardUNet2DConditionModel"]


@dataclasses.dataclass
class Pipeline:
    """The loaded components of an editing pipeline (Flax models plus tokenizer and noise schedule)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    noise_schedule: NoiseSchedule
    path: epath.Path


def training_source(path: str | os.PathLike) -> tuple[epath.Path, int | None] | None:
    """``(workdir, step)`` if ``path`` is a training workdir or one of its checkpoints, else None."""
    from rewardedit_jax import workdir as workdir_lib

    path = to_path(path)
    if workdir_lib.is_workdir(path):
        return path, None
    if (
        path.name.isdigit()
        and path.parent.name == workdir_lib.CHECKPOINTS
        and workdir_lib.is_workdir(path.parent.parent)
    ):
        return path.parent.parent, int(path.name)
    return None


def files_root(src: str | os.PathLike) -> epath.Path:
    """Where the configuration files (tokenizer/, scheduler/, model_index.json) of ``src`` live."""
    found = training_source(src)
    return found[0] / "model" if found else to_path(src)


def layout_of(src: str | os.PathLike) -> tuple[list[str], str]:
    """The components under ``src`` and whether it is a ``pipeline`` or a single ``component`` (unet)."""
    src = to_path(src)
    if training_source(src):
        return layout_of(files_root(src))
    manifest = model_dir.folder_manifest(src)
    if manifest is not None:
        return list(manifest["components"]), manifest.get("layout", "pipeline")
    index = src / "model_index.json"
    if index.is_file():
        listed = read_json(index)
        for name in COMPONENTS:
            entry = listed.get(name)
            if entry is None or (isinstance(entry, list) and entry[0] is None):
                continue
            if not (src / name).is_dir():
                raise ConversionError(
                    f"{src}: component {name!r} is listed in model_index.json but {name}/ is missing"
                )
    found = [name for name in COMPONENTS if (src / name).is_dir()]
    if found:
        if "unet" not in found:
            raise ConversionError(f"{src}: the pipeline folder has no unet/ component")
        return found, "pipeline"
    if (src / "config.json").is_file():
        return ["unet"], "component"
    raise ConversionError(f"{src}: neither a diffusers folder nor a Flax model directory (no config.json)")


def _component_dir(src: str | os.PathLike, name: str, layout: str) -> epath.Path:
    if layout == "component" and not model_dir.is_model_dir(src):
        return to_path(src)
    return to_path(src) / name


def load_model_component(
    src: str | os.PathLike, name: str, layout: str | None = None, *, ema: bool = True, **kwargs
) -> tuple[Any, dict]:
    """Load one model component (``unet``, ``vae``, ``text_encoder``) from a diffusers or Flax folder,
    or from a training workdir / checkpoint (the U-Net's EMA weights unless ``ema`` is False)."""
    found = training_source(src)
    if found:
        workdir, step = found
        if name != "unet":
            return load_model_component(files_root(src), name, "pipeline", **kwargs)
        from rewardedit_jax import workdir as workdir_lib
        from rewardedit_jax.convert.mapping import finish_loaded

        config, extra = model_dir.component_config(files_root(src) / "unet")
        reward = unet.RewardConfig(**extra["reward"]) if extra.get("reward") else None
        cfg = unet.unet_config(config, files_root(src) / "unet" / "config.json", reward)
        model = unet.build_abstract(cfg, kwargs.get("compute_dtype"))
        workdir_lib.load_unet_params(workdir, model, ema=ema, step=step)
        return finish_loaded(model, kwargs.get("param_dtype")), config
    if layout is None:
        _, layout = layout_of(src)
    folder = _component_dir(src, name, layout)
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{folder}: component {name!r} has no config.json")
    io = MODELS[name]
    if model_dir.is_model_dir(src) or (folder / "params").is_dir():
        kwargs.pop("in_channels", None)
        return io.load_flax(folder, **kwargs)
    return io.load_diffusers(folder, **kwargs)


def _validate_files(src: str | os.PathLike, name: str) -> None:
    folder = files_root(src) / name
    if name == "scheduler":
        try:
            NoiseSchedule.from_scheduler_config(read_json(folder / "scheduler_config.json"))
        except ScheduleError as e:
            raise ConversionError(f"{folder / 'scheduler_config.json'}: {e}") from None
    elif name == "tokenizer":
        from rewardedit_jax.tokenizer import load_tokenizer

        load_tokenizer(folder)


def _copy_files(src: str | os.PathLike, dst: Path, name: str) -> None:
    _validate_files(src, name)
    with local_copy(files_root(src) / name) as folder:
        shutil.copytree(folder, Path(dst) / name, ignore=shutil.ignore_patterns("params"))


def import_folder(
    src: str | os.PathLike,
    tmp: Path,
    *,
    in_channels: int | None = None,
    log=print,
    source: str | None = None,
) -> list[str]:
    """Convert the diffusers folder ``src`` into the (temporary) Flax model directory ``tmp``.

    ``source``: what the manifest records as the origin (default: ``src`` made absolute; a Hub model's
    pinned id, which names the same files on any machine, rather than its folder in one machine's cache).
    """
    src = to_path(src)
    components, layout = layout_of(src)
    models = {}
    for name in components:  # read and validate everything before writing anything
        if name in MODELS:
            log(f"reading {name} from {_component_dir(src, name, layout)}")
            kwargs = {"in_channels": in_channels} if name == "unet" and in_channels else {}
            models[name] = load_model_component(src, name, layout, **kwargs)
        else:
            _validate_files(src, name)
    for name in components:
        if name in MODELS:
            log(f"writing {name}")
            model, config = models[name]
            MODELS[name].save_flax(model, tmp / name, config)
        else:
            _copy_files(src, tmp, name)
    if (src / "model_index.json").is_file():
        with local_copy(src / "model_index.json") as index:
            shutil.copy(index, tmp / "model_index.json")
    model_dir.write_manifest(tmp, components, source=source or str(absolute(src)), layout=layout)
    return components


def model_index_for(components: dict[str, Any], scheduler_class: str | None, base: dict | None) -> dict:
    """``model_index.json`` of an export: the imported one, made consistent with what is written."""
    index = dict(base or {})
    unet_model = components.get("unet")
    index["_class_name"] = (
        PIPELINE_CLASS
        if unet_model.config.in_channels == 8
        else index.get("_class_name", "StableDiffusionPipeline")
    )
    # Components this project does not convert are not exported; the pipelines accept them absent.
    index["safety_checker"] = index["feature_extractor"] = [None, None]
    if "image_encoder" in index:
        index["image_encoder"] = [None, None]
    index["requires_safety_checker"] = False
    index["unet"] = REWARD_UNET_ENTRY if unet_model.has_reward else ["diffusers", "UNet2DConditionModel"]
    if "vae" in components:
        identity = type(components["vae"]).__name__ == "IdentityAutoencoder"
        index["vae"] = (
            ["rewardedit_jax.torch_compat", "IdentityAutoencoder"]
            if identity
            else ["diffusers", "AutoencoderKL"]
        )
    if "text_encoder" in components:
        index["text_encoder"] = ["transformers", "CLIPTextModel"]
    if scheduler_class:
        index["scheduler"] = ["diffusers", scheduler_class]
    index.setdefault("tokenizer", ["transformers", "CLIPTokenizer"])
    return index


def export_folder(src: str | os.PathLike, tmp: Path, *, ema: bool = True, log=print) -> list[str]:
    """Write the model at ``src`` (Flax model directory, training workdir or checkpoint, or diffusers
    folder) as a diffusers folder."""
    src = to_path(src)
    components, layout = layout_of(src)
    models = {name: load_model_component(src, name, layout, ema=ema) for name in components if name in MODELS}
    if layout == "component":
        model, config = models["unet"]
        log(f"writing unet to {tmp}")
        MODELS["unet"].save_diffusers(model, tmp, config)
        return components
    for name, (model, config) in models.items():
        log(f"writing {name}")
        MODELS[name].save_diffusers(model, tmp / name, config)
    scheduler_class = None
    for name in FILES:
        if name in components:
            _copy_files(src, tmp, name)
            if name == "scheduler":
                scheduler_class = read_json(tmp / name / "scheduler_config.json").get("_class_name")
    index_path = files_root(src) / "model_index.json"
    base = read_json(index_path) if index_path.is_file() else None
    write_json(
        tmp / "model_index.json", model_index_for({k: v[0] for k, v in models.items()}, scheduler_class, base)
    )
    return components


def load_pipeline(path: str | os.PathLike, *, param_dtype=None, compute_dtype=None) -> Pipeline:
    """Load a whole editing pipeline from a diffusers folder, a Flax model directory or a Hugging Face Hub
    id (``owner/name[@revision]``, downloaded into the Hugging Face cache: :mod:`rewardedit_jax.hub`).

    Requires all of ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler``.
    """
    from rewardedit_jax.tokenizer import load_tokenizer

    path = to_path(hub.local_folder(path))
    components, layout = layout_of(path)
    missing = [c for c in COMPONENTS if c not in components]
    if layout == "component" or missing:
        raise ConversionError(
            f"{path}: not a whole pipeline (missing {', '.join(missing) or 'all but unet'})"
        )
    kwargs = {"param_dtype": param_dtype, "compute_dtype": compute_dtype}
    models = {name: load_model_component(path, name, layout, **kwargs)[0] for name in MODELS}
    scheduler_path = files_root(path) / "scheduler" / "scheduler_config.json"
    scheduler_config = read_json(scheduler_path)
    try:
        schedule = NoiseSchedule.from_scheduler_config(scheduler_config)
    except ScheduleError as e:
        raise ConversionError(f"{scheduler_path}: {e}") from None
    return Pipeline(
        unet=models["unet"],
        vae=models["vae"],
        text_encoder=models["text_encoder"],
        tokenizer=load_tokenizer(files_root(path) / "tokenizer"),
        scheduler_config=scheduler_config,
        noise_schedule=schedule,
        path=path,
    )
