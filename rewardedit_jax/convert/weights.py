"""Reading and writing PyTorch-format weight files (diffusers/transformers folders), tensor by tensor.

Supports ``*.safetensors`` and ``*.bin`` (loaded only with ``torch.load(weights_only=True)``), single
files or sharded with an ``*.index.json``, and ``fp16``-style variants when no plain file exists.
Every failure is a :class:`ConversionError` whose one-line message names the file and the problem.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from etils import epath

from rewardedit_jax import io
from rewardedit_jax.io import ConversionError, atomic_directory, write_json  # noqa: F401  (this module's API)

DIFFUSERS_STEM = "diffusion_pytorch_model"
TRANSFORMERS_STEMS = ("model", "pytorch_model")


def read_json(path: str | os.PathLike) -> dict:
    """:func:`rewardedit_jax.io.read_json`, failing with a :class:`ConversionError`."""
    try:
        return io.read_json(path)
    except io.PathError as e:
        raise ConversionError(str(e)) from None


def find_weight_files(
    folder: str | os.PathLike, stems: tuple[str, ...] = (DIFFUSERS_STEM,)
) -> list[epath.Path]:
    """The weight file(s) of a model folder, preferring safetensors, then .bin; plain, then a variant."""
    folder = io.to_path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: model folder not found")
    for ext in ("safetensors", "bin"):
        for stem in stems:
            index = folder / f"{stem}.{ext}.index.json"
            if index.is_file():
                weight_map = read_json(index).get("weight_map")
                if not isinstance(weight_map, dict) or not weight_map:
                    raise ConversionError(f"{index}: no 'weight_map' in the shard index")
                files = [folder / name for name in sorted(set(weight_map.values()))]
                for f in files:
                    if not f.is_file():
                        raise ConversionError(f"{f}: shard listed in {index.name} is missing")
                return files
            single = folder / f"{stem}.{ext}"
            if single.is_file():
                return [single]
    for ext in ("safetensors", "bin"):  # variants such as diffusion_pytorch_model.fp16.safetensors
        for stem in stems:
            variants = sorted(folder.glob(f"{stem}.*.{ext}"))
            variants = [v for v in variants if not v.name.endswith(".index.json")]
            if len(variants) == 1:
                return variants
            if len(variants) > 1:
                names = ", ".join(v.name for v in variants)
                raise ConversionError(f"{folder}: several weight variants ({names}); keep one")
    raise ConversionError(f"{folder}: no weights found ({'/'.join(stems)}.safetensors or .bin)")


def _to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


class WeightReader:
    """Lazy ``key -> numpy array`` access over one or more weight files (one tensor in memory at a time)."""

    def __init__(self, files: list[str | os.PathLike]):
        self.files = [io.to_path(f) for f in files]
        self._where: dict[str, Path] = {}
        self._bin_cache: dict[Path, Mapping] = {}
        self._stack = contextlib.ExitStack()
        self._handles: dict[Path, object] = {}
        self._local_names: dict[Path, str] = {}
        for f in self.files:
            for key in self._keys_of(f):
                if key in self._where:
                    raise ConversionError(f"{f}: tensor {key!r} also appears in {self._where[key].name}")
                self._where[key] = f

    def _keys_of(self, f: Path) -> list[str]:
        if f.suffix == ".safetensors":
            return list(self._handle(f).keys())
        return list(self._bin(f).keys())

    def _local(self, f: Path) -> str:
        """A local file name to read ``f`` from (a remote file is downloaded once, deleted on close)."""
        if f not in self._local_names:
            self._local_names[f] = str(self._stack.enter_context(io.local_copy(f)))
        return self._local_names[f]

    def _handle(self, f: Path):
        if f not in self._handles:
            from safetensors import safe_open

            try:
                self._handles[f] = self._stack.enter_context(safe_open(self._local(f), framework="pt"))
            except Exception as e:  # safetensors raises its own error types for bad headers
                raise ConversionError(f"{f}: unreadable safetensors file ({_one_line(e)})") from None
        return self._handles[f]

    def _bin(self, f: Path) -> Mapping:
        if f not in self._bin_cache:
            import torch

            try:
                state = torch.load(self._local(f), map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                try:  # legacy (non-zip) files cannot be memory-mapped
                    state = torch.load(self._local(f), map_location="cpu", weights_only=True)
                except Exception:
                    raise ConversionError(f"{f}: unreadable PyTorch weights ({_one_line(e)})") from None
            if not isinstance(state, Mapping):
                raise ConversionError(f"{f}: expected a state dict, found {type(state).__name__}")
            self._bin_cache[f] = state
        return self._bin_cache[f]

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def shape(self, key: str) -> tuple[int, ...]:
        f = self._where[key]
        if f.suffix == ".safetensors":
            return tuple(self._handle(f).get_slice(key).get_shape())
        return tuple(self._bin(f)[key].shape)

    def get(self, key: str) -> np.ndarray:
        f = self._where[key]
        try:
            if f.suffix == ".safetensors":
                tensor = self._handle(f).get_tensor(key)
            else:
                tensor = self._bin(f)[key]
            return _to_numpy(tensor)
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(f"{f}: cannot read tensor {key!r} ({_one_line(e)})") from None

    def close(self):
        self._stack.close()
        self._handles.clear()
        self._bin_cache.clear()
        self._local_names.clear()

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc):
        self.close()


def open_weights(folder: Path, stems: tuple[str, ...] = (DIFFUSERS_STEM,)) -> WeightReader:
    return WeightReader(find_weight_files(folder, stems))


def save_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def save_weights_folder(
    dst: str | os.PathLike,
    weights_file: str,
    tensors: Mapping[str, np.ndarray],
    config: Mapping,
    metadata: dict | None = None,
) -> None:
    """Write a diffusers/transformers component folder: ``dst/weights_file`` (safetensors) and
    ``dst/config.json``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    save_safetensors(dst / weights_file, tensors, metadata=metadata)
    write_json(dst / "config.json", config)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) < 300 else text[:297] + "..."
