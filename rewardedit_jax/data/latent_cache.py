"""The latent cache: a built editing dataset encoded once by the frozen VAE and text encoder.

Training encodes every image pair with the VAE and every instruction and feedback text with the CLIP text
encoder (docs/sources.md, "Training recipe"), although both are frozen. `precompute` does that once and
writes the results as a dataset that `make_latent_dataset` reads instead of images, so large runs skip the
encoders.
Command line: ``python -m rewardedit_jax.data.precompute`` (docs/data.md).

Per example (index i of the split, images decoded and resized exactly like the pipeline's
`EditExampleTransform` with the full JPEG decode, scaled to [-1, 1]):

| field | shape | |
|---|---|---|
| `source_latent` | (h, w, C) | VAE posterior mode (= mean) of the source image, unscaled |
| `edited_latent_mean`, `edited_latent_logvar` | (h, w, C) | posterior moments of the edited image, unscaled |
| `*_flipped` | (h, w, C) | the same three for the horizontally flipped image pair (when built with flips) |
| `encoder_hidden_states` | (77, D) | text encoder last hidden state of the instruction |
| `feedback_pooled` | (D,) | pooled embedding of the 3 reward texts joined with "; " (datasets with rewards) |
| `reward_scores` | (3,) float32 | (datasets with rewards) |
| `record_index` | () int32 | i, the example's index in the source split |

The empty prompt's `encoder_hidden_states` (what CFG dropout substitutes) is saved once, float32, in
`empty_prompt_hidden_states.npy` (`load_empty_prompt`), so a trainer reading the cache needs neither
encoder.

Latents and text embeddings are stored as float16 (default) or float32. float16 rounds each value to 11
significant bits: relative error at most 2**-11 (4.9e-4), absolute at most 2**-25 below 2**-14; the
posterior std exp(logvar / 2) then has relative error at most |logvar| * 2**-12 (< 0.5% at the clip bound
|logvar| = 20). Values outside float16's range are refused when writing.

Storage: uncompressed ArrayRecord shards (`latents-NNNNN.array_record`, 1024 records each, one record
per example in split order) and `cache_info.json` (format version, source dataset and split, count, model
path, resolution, latent shape, text dims, dtype, flips, scaling_factor, fields, shard files). A record is
``b"RLC1"``, a uint32 little-endian header length, a JSON header ``[[name, dtype, shape], ...]`` and each
array's raw little-endian bytes, all 8-byte aligned: no pickle. Reading needs grain, array_record and
numpy only (no TensorFlow). A cache may live under gs:// (array_record reads gs:// objects itself; other
remote schemes are refused); `precompute` builds it locally and uploads it.

`make_latent_dataset` has the order, sharding, determinism and iterator-state semantics of
`pipeline.make_dataset` (it is `make_grain_dataset` with `LatentExampleTransform`): the per-example random
flip picks the flipped or the unflipped triplet from the rng the pipeline passes, so restoring an iterator
state reproduces the remaining batches exactly. Its batches hold `source_latent`, `edited_latent_mean`,
`edited_latent_logvar`, `encoder_hidden_states` and, with rewards, `feedback_pooled` and `reward_scores`,
all float32, and `record_index` int32. The trainer samples ``edited latent = (mean + exp(logvar / 2) *
eps) * scaling_factor`` and uses the source latent unscaled.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from rewardedit_jax import hub
from rewardedit_jax.data import pipeline
from rewardedit_jax.io import absolute, read_bytes, scheme_of, to_path

FORMAT = "rewardedit_jax.latent_cache"
FORMAT_VERSION = 1
INFO_FILE = "cache_info.json"
EMPTY_PROMPT_FILE = "empty_prompt_hidden_states.npy"
SHARD_PATTERN = "latents-{:05d}.array_record"
# One record per group for random access; latents barely compress, and zstd made reading 3x slower.
WRITER_OPTIONS = "group_size:1,uncompressed"
LATENT_FIELDS = ("source_latent", "edited_latent_mean", "edited_latent_logvar")
FLIPPED_SUFFIX = "_flipped"
TEXT_FIELDS = ("encoder_hidden_states", "feedback_pooled")
STORAGE_DTYPES = ("float16", "float32")
REQUIRED_FEATURES = ("source_image", "edited_image", "instruction")
PRECOMPUTE_COMMAND = "python -m rewardedit_jax.data.precompute"

# Remote URL schemes array_record's reader opens itself (its riegeli GCS reader).
ARRAY_RECORD_SCHEMES = ("gs",)
_MAGIC = b"RLC1"
_ALIGN = 8
_RECORD_DTYPES = frozenset(np.dtype(t).newbyteorder("<").str for t in ("f2", "f4", "i4", "i8", "u1"))


class LatentCacheError(Exception):
    """A latent cache (or its inputs) cannot be read or written; the message is one line."""


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) < 300 else text[:297] + "..."


# --- Records --------------------------------------------------------------------------------------------


def _padding(n: int) -> int:
    return -n % _ALIGN


def encode_record(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialize named numpy arrays (float16/32, int32/64, uint8) into one record (no pickle)."""
    header, blobs = [], []
    for name, value in arrays.items():
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("<")
        if dtype.str not in _RECORD_DTYPES:
            raise LatentCacheError(f"field {name!r}: dtype {array.dtype} cannot be stored")
        data = array.astype(dtype, copy=False).tobytes(order="C")
        header.append([name, dtype.str, list(array.shape)])
        blobs.append(data + b"\0" * _padding(len(data)))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * _padding(len(_MAGIC) + 4 + len(text))
    return b"".join([_MAGIC, struct.pack("<I", len(text)), text, *blobs])


def decode_record(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a record written by `encode_record` (read-only views of `data`)."""
    if data[: len(_MAGIC)] != _MAGIC:
        raise LatentCacheError("not a latent-cache record (bad magic bytes)")
    (length,) = struct.unpack_from("<I", data, len(_MAGIC))
    offset = len(_MAGIC) + 4
    layout, size = _layout(bytes(data[offset : offset + length]), offset + length)
    if size > len(data):
        raise LatentCacheError(f"record truncated ({len(data)} of {size} bytes)")
    return {
        name: np.frombuffer(data, dtype, count, start).reshape(shape)
        for name, dtype, count, start, shape in layout
    }


@functools.lru_cache(maxsize=64)
def _layout(header: bytes, offset: int) -> tuple[tuple, int]:
    """((name, dtype, count, offset, shape) per field, record size) of a record header (all records of a
    cache share one, so it is parsed once)."""
    layout = []
    for name, dtype, shape in json.loads(header):
        if dtype not in _RECORD_DTYPES:
            raise LatentCacheError(f"field {name!r}: unsupported dtype {dtype!r} in record")
        count = int(np.prod(shape, dtype=np.int64))
        layout.append((name, np.dtype(dtype), count, offset, tuple(shape)))
        nbytes = count * np.dtype(dtype).itemsize
        offset += nbytes + _padding(nbytes)
    return tuple(layout), offset


class CacheWriter:
    """Writes records into ArrayRecord shards of a folder; `finish(info)` writes `cache_info.json`.

    Every record must have the fields, dtypes and shapes of the first one.
    """

    def __init__(self, directory: str | os.PathLike, *, records_per_shard: int = 1024):
        from array_record.python.array_record_module import ArrayRecordWriter

        self._writer_class = ArrayRecordWriter
        self.directory = Path(directory)
        self.records_per_shard = records_per_shard
        self.files: list[str] = []
        self.fields: dict[str, dict[str, Any]] | None = None
        self.count = 0
        self._writer = None

    def write(self, arrays: Mapping[str, np.ndarray]) -> None:
        fields = {
            k: {"dtype": np.asarray(v).dtype.name, "shape": list(np.shape(v))} for k, v in arrays.items()
        }
        if self.fields is None:
            self.fields = fields
        elif fields != self.fields:
            raise LatentCacheError(f"record {self.count} has fields {fields}, expected {self.fields}")
        if self._writer is None or self.count % self.records_per_shard == 0:
            self._close_shard()
            name = SHARD_PATTERN.format(len(self.files))
            self._writer = self._writer_class(str(self.directory / name), WRITER_OPTIONS)
            self.files.append(name)
        self._writer.write(encode_record(arrays))
        self.count += 1

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """Close the shards and write `cache_info.json` (`info` plus format, count, fields and files)."""
        self._close_shard()
        if self.count == 0:
            raise LatentCacheError(f"{self.directory}: no records were written")
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **info,
            "num_examples": self.count,
            "fields": self.fields,
            "files": self.files,
        }
        with open(self.directory / INFO_FILE, "w", encoding="utf-8") as f:
            json.dump(full, f, indent=1)
            f.write("\n")
        return full


# --- Reading --------------------------------------------------------------------------------------------


def read_info(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The `cache_info.json` of a latent cache, checked for format and version."""
    cache_dir = to_path(cache_dir)
    if scheme_of(cache_dir) not in (None, *ARRAY_RECORD_SCHEMES):
        raise LatentCacheError(
            f"{cache_dir}: array_record reads only local files and {', '.join(ARRAY_RECORD_SCHEMES)}:// URLs"
        )
    path = cache_dir / INFO_FILE
    if not cache_dir.is_dir():
        raise LatentCacheError(
            f"{cache_dir}: no latent cache (no such folder); build one with {PRECOMPUTE_COMMAND}"
        )
    if not path.is_file():
        raise LatentCacheError(
            f"{cache_dir}: no latent cache (no {INFO_FILE}); build one with {PRECOMPUTE_COMMAND}"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # OSError also covers the remote backends' errors
        raise LatentCacheError(f"{path}: unreadable ({_one_line(e)})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise LatentCacheError(f"{path}: not a latent cache (format {info.get('format')!r})")
    if info.get("format_version") != FORMAT_VERSION:
        raise LatentCacheError(
            f"{path}: format version {info.get('format_version')} is not {FORMAT_VERSION}; rebuild the cache"
        )
    missing = [name for name in info["files"] if not (cache_dir / name).is_file()]
    if missing:
        raise LatentCacheError(f"{cache_dir}: shard files missing: {', '.join(missing)}")
    return info


class LatentRecords(Sequence):
    """Random access to the records of a latent cache: `records[i]` is a dict of numpy arrays as stored."""

    def __init__(self, cache_dir: str | os.PathLike, info: Mapping[str, Any] | None = None):
        self.cache_dir = to_path(cache_dir)
        self.info = dict(info) if info is not None else read_info(self.cache_dir)
        paths = [str(self.cache_dir / name) for name in self.info["files"]]
        self._source = grain.sources.ArrayRecordDataSource(paths)
        if len(self._source) != self.info["num_examples"]:
            raise LatentCacheError(
                f"{self.cache_dir}: {len(self._source)} records, {INFO_FILE} says {self.info['num_examples']}"
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        return decode_record(self._source[index])

    def __repr__(self) -> str:
        return f"LatentRecords({str(self.cache_dir)!r}, {len(self)} examples)"


def load_latent_source(cache_dir: str | os.PathLike) -> tuple[LatentRecords, dict[str, Any]]:
    """(random-access records of a latent cache, its `cache_info.json`)."""
    records = LatentRecords(cache_dir)
    return records, records.info


def load_empty_prompt(cache_dir: str | os.PathLike) -> np.ndarray:
    """The text encoder's last hidden state of the empty prompt, float32 (77, D), saved with the cache."""
    info = read_info(cache_dir)
    if not info.get("empty_prompt_file"):
        raise LatentCacheError(f"{cache_dir}: the cache holds no empty-prompt embedding")
    return np.load(io.BytesIO(read_bytes(to_path(cache_dir) / info["empty_prompt_file"])), allow_pickle=False)


@dataclasses.dataclass(frozen=True)
class LatentExampleTransform:
    """One cached record -> training arrays (float32), with the pipeline's per-example random flip.

    With `flip`, the `*_flipped` latents replace the plain ones for about half the examples; the choice is
    the same draw `EditExampleTransform` makes (`rng.random() < 0.5`).
    """

    flip: bool = True

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        suffix = FLIPPED_SUFFIX if self.flip and rng.random() < 0.5 else ""
        out = {name: np.asarray(example[name + suffix], np.float32) for name in LATENT_FIELDS}
        for name in (*TEXT_FIELDS, "reward_scores"):
            if name in example:
                out[name] = np.asarray(example[name], np.float32)
        out["record_index"] = np.int32(example["record_index"])
        return out


def make_latent_dataset(
    cache_dir: str | os.PathLike,
    options: pipeline.DataOptions | None = None,
    *,
    flip: bool = True,
    **keywords: Any,
) -> grain.DatasetIterator:
    """An iterator of this process's numpy batches of a latent cache (see the module docstring).

    `options` and `keywords` mean what they mean in `pipeline.make_dataset`. `flip` needs a cache built
    with flips.
    """
    options = pipeline.DataOptions.merged(options, keywords)
    records, info = load_latent_source(cache_dir)
    if flip and not info["flips"]:
        raise LatentCacheError(
            f"{cache_dir}: the cache was built without flips (--no-flips); pass flip=False"
        )
    return iter(pipeline.make_grain_dataset(records, options, transform=LatentExampleTransform(flip)))


# --- Precompute -----------------------------------------------------------------------------------------


class _SerializedTokenizer:
    """A tokenizer the read threads call one at a time (HF tokenizers are not thread-safe)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self.tokenizer(texts)


class _Head(Sequence):
    """The first `n` examples of a random-access source."""

    def __init__(self, source: Sequence, n: int):
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):  # type: ignore[override]
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.source[index]


def _open_dataset(dataset: str | os.PathLike, split: str, data_dir: str | os.PathLike | None):
    """(data source, info) of a built dataset, with one-line errors for a missing dataset or split."""
    path = to_path(dataset, expanduser=True)
    is_dir = path.is_dir() and (path / "dataset_info.json").is_file()
    if not is_dir:
        name = os.fspath(dataset).split(":")[0]
        root = to_path(data_dir, expanduser=True) if data_dir is not None else None
        if root is not None and not (root / name).is_dir():
            raise LatentCacheError(
                f"dataset {os.fspath(dataset)!r} not found: no {root / name}; build it with tfds build"
            )
    try:
        builder = pipeline.load_builder(dataset, data_dir)
    except Exception as e:
        raise LatentCacheError(f"dataset {os.fspath(dataset)!r}: {_one_line(e)}") from None
    if split not in builder.info.splits:
        raise LatentCacheError(
            f"{builder.info.full_name} has no split {split!r}; it has {sorted(builder.info.splits.keys())}"
        )
    missing = [f for f in REQUIRED_FEATURES if f not in builder.info.features]
    if missing:
        raise LatentCacheError(
            f"{builder.info.full_name} has no features {missing}; it has {list(builder.info.features)}"
        )
    try:
        return pipeline.load_data_source(dataset, split, data_dir)
    except Exception as e:
        raise LatentCacheError(f"dataset {os.fspath(dataset)!r} split {split!r}: {_one_line(e)}") from None


def _load_encoders(model_path: str | os.PathLike):
    from rewardedit_jax import convert

    try:
        vae = convert.load_vae(model_path)
        text_encoder = convert.load_text_encoder(model_path)
        tokenizer = convert.load_tokenizer(model_path)
    except convert.ConversionError as e:
        raise LatentCacheError(f"model: {_one_line(e)}") from None
    return vae, text_encoder, tokenizer


def _encode_batch(graphdef, state, batch, *, flips: bool):
    """Posterior moments of the (flipped) image pairs and text embeddings of one batch; jitted."""
    import jax.numpy as jnp
    from flax import nnx

    vae, text_encoder = nnx.merge(graphdef, state)
    source, edited = batch["source_image"], batch["edited_image"]
    b = source.shape[0]
    images = [source, edited]
    if flips:
        images += [source[:, :, ::-1], edited[:, :, ::-1]]
    mean, logvar = vae.encode(jnp.concatenate(images))
    out = {}
    for j, suffix in enumerate(("", FLIPPED_SUFFIX) if flips else ("",)):
        pair = slice(2 * j * b, (2 * j + 1) * b), slice((2 * j + 1) * b, (2 * j + 2) * b)
        out["source_latent" + suffix] = vae.mode(mean[pair[0]])
        out["edited_latent_mean" + suffix] = mean[pair[1]]
        out["edited_latent_logvar" + suffix] = logvar[pair[1]]
    ids = batch["input_ids"]
    if "feedback_input_ids" in batch:
        ids = jnp.concatenate([ids, batch["feedback_input_ids"]])
    hidden, pooled = text_encoder(ids)
    out["encoder_hidden_states"] = hidden[:b]
    if "feedback_input_ids" in batch:
        out["feedback_pooled"] = pooled[b:]
    return out


@functools.cache
def _jitted_encode():
    """One compiled function per (model structure, shapes, flips), shared by every precompute call."""
    import jax

    return jax.jit(_encode_batch, static_argnums=0, static_argnames="flips")


def _padded(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """The batch with its last row repeated up to `size` rows (one compiled shape for the last batch too)."""
    n = len(next(iter(batch.values())))
    if n == size:
        return dict(batch)
    return {k: np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)]) for k, v in batch.items()}


def precompute(
    model_path: str | os.PathLike,
    dataset: str | os.PathLike,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike,
    resolution: int = 256,
    batch_size: int = 16,
    flips: bool = True,
    limit: int | None = None,
    dtype: str = "float16",
    read_threads: int = 4,
    records_per_shard: int = 1024,
    fast_jpeg: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode `dataset`'s `split` (its first `limit` examples) with the VAE and text encoder of `model_path`.

    Writes the cache to `out_dir` (through a temporary sibling folder renamed on success) and returns its
    `cache_info.json`. `model_path` is a diffusers pipeline folder or a Flax model directory (only its
    `vae`, `text_encoder` and `tokenizer` are loaded), or a Hugging Face Hub id of one
    (`owner/name[@revision]`, recorded pinned to its commit). Images are resized to `resolution` like the
    input pipeline does (`fast_jpeg=False`: full JPEG decode, the official preprocessing). `dtype` is the
    storage type of latents and text embeddings (`float16` or `float32`).
    """
    from tqdm import tqdm

    from rewardedit_jax.convert.weights import atomic_directory

    if dtype not in STORAGE_DTYPES:
        raise LatentCacheError(f"dtype {dtype!r} is not one of {STORAGE_DTYPES}")
    if batch_size < 1 or resolution < 1 or (limit is not None and limit < 1):
        raise LatentCacheError("batch_size, resolution and limit must be positive")
    out_dir = to_path(out_dir)
    if out_dir.exists() and not overwrite:
        raise LatentCacheError(f"{out_dir}: output already exists (pass overwrite=True / --overwrite)")
    source, ds_info = _open_dataset(dataset, split, data_dir)
    found = hub.resolve(model_path)
    model_source = found.pinned if found else str(absolute(model_path))
    vae, text_encoder, tokenizer = _load_encoders(found.folder if found else model_path)
    factor = vae.config.downsample_factor
    if resolution % factor:
        raise LatentCacheError(
            f"resolution {resolution} is not a multiple of the VAE's downsampling {factor}"
        )
    count = len(source) if limit is None else min(limit, len(source))
    with_feedback = "reward_texts" in ds_info.features
    has_scores = "reward_scores" in ds_info.features

    transform = pipeline.EditExampleTransform(
        resolution, _SerializedTokenizer(tokenizer), flip=False, fast_jpeg=fast_jpeg
    )
    batches = pipeline.make_grain_dataset(
        _Head(source, count),
        pipeline.DataOptions(
            global_batch_size=batch_size,
            shuffle=False,
            num_epochs=1,
            drop_remainder=False,
            shard_index=0,
            shard_count=1,
            read_threads=read_threads,
        ),
        transform=transform,
    )
    from flax import nnx

    graphdef, state = nnx.split((vae, text_encoder))
    encode = _jitted_encode()
    storage = np.dtype(dtype)
    input_keys = ("source_image", "edited_image", "input_ids") + (
        ("feedback_input_ids",) if with_feedback else ()
    )

    def write(writer: CacheWriter, outputs, batch) -> None:
        n = len(batch["record_index"])
        arrays = {k: np.asarray(v)[:n].astype(storage) for k, v in outputs.items()}
        for name, array in arrays.items():
            bad = ~np.isfinite(array.reshape(n, -1)).all(axis=1)
            if bad.any():
                index = int(batch["record_index"][np.argmax(bad)])
                raise LatentCacheError(f"example {index}: {name} is not finite in {dtype}")
        for i in range(n):
            record = {k: v[i] for k, v in arrays.items()}
            if has_scores:
                record["reward_scores"] = np.asarray(batch["reward_scores"][i], np.float32)
            record["record_index"] = np.int32(batch["record_index"][i])
            writer.write(record)

    start = time.perf_counter()
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        writer = CacheWriter(tmp, records_per_shard=records_per_shard)
        pending = None
        with tqdm(
            total=count, unit="ex", desc=f"encoding {ds_info.full_name} {split}", disable=not progress
        ) as bar:
            for batch in batches:
                inputs = _padded({k: batch[k] for k in input_keys}, batch_size)
                # Dispatched asynchronously: the device encodes this batch while the last one is written.
                outputs = encode(graphdef, state, inputs, flips=flips)
                if pending is not None:
                    write(writer, *pending)
                    bar.update(len(pending[1]["record_index"]))
                pending = outputs, batch
            if pending is not None:
                write(writer, *pending)
                bar.update(len(pending[1]["record_index"]))
        # The empty prompt's states replace the instruction's under CFG dropout
        # (docs/sources.md, "Training recipe").
        empty = np.asarray(text_encoder(np.asarray(tokenizer([""]), np.int32))[0][0], np.float32)
        np.save(tmp / EMPTY_PROMPT_FILE, empty, allow_pickle=False)
        latent_shape = [resolution // factor, resolution // factor, vae.config.latent_channels]
        info = writer.finish(
            {
                "dataset": ds_info.full_name,
                "split": split,
                "source_num_examples": len(source),
                "model_path": model_source,
                "resolution": resolution,
                "fast_jpeg": fast_jpeg,
                "latent_shape": latent_shape,
                "text_length": writer.fields["encoder_hidden_states"]["shape"][0] if writer.fields else None,
                "text_dim": int(text_encoder.config.hidden_size),
                "dtype": dtype,
                "flips": flips,
                "has_rewards": has_scores,
                "has_feedback": with_feedback,
                "feedback_separator": pipeline.FEEDBACK_SEPARATOR,
                "scaling_factor": float(vae.scaling_factor),
                "empty_prompt_file": EMPTY_PROMPT_FILE,
                "encode_seconds": round(time.perf_counter() - start, 1),
            }
        )
    return info
