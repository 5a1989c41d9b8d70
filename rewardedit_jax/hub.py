"""Hugging Face Hub model ids wherever a model folder is accepted.

A string is a Hub id when it names no existing local path, is not a remote URL (``gs://...``) and has the
form ``owner/name`` or ``owner/name@revision`` (a branch, tag or commit). :func:`resolve` downloads what the
converters read of it into huggingface_hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE``) and returns the
local snapshot folder with the commit it holds; anything else is a path and passes unchanged
(:func:`local_folder`). An existing relative folder such as ``runs/stage1`` therefore stays a folder.

- Only the files a model needs are downloaded (:func:`pipeline_files`): ``model_index.json`` and, in the
  components the converters read, configs, tokenizer files and the weights the loader would pick (plain
  safetensors, else plain ``.bin``, else the variants), never ``.ckpt``, ``.msgpack``, ONNX or the single-file
  checkpoints at the top of a pipeline repository. A Flax model directory pushed to the Hub
  (``rewardedit_model.json``) comes whole.
- ``HF_HUB_OFFLINE=1`` reads the local cache only; the Hub is asked otherwise, and when it cannot be reached
  the cache is used as huggingface_hub's own ``snapshot_download`` would. Private and gated models use
  the token in ``HF_TOKEN``, from the environment only (a token saved by ``hf auth login`` is not read, as
  no secret of this project comes from a file); it is never logged.
- A Hub id that cannot be resolved is a :class:`HubError` (a :class:`rewardedit_jax.io.PathError`): one line
  naming the id and the reason, which every command prints as its other path errors.
- A download prints one line to stderr when it starts and one when it ends; each id is resolved once per
  process (the commit it resolved to is then logged), so checking a config and loading its model later
  ask the Hub once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterable

from rewardedit_jax.io import PathError, is_remote

# The components the converters read (rewardedit_jax.convert.pipeline.COMPONENTS, spelled out here below the
# converters; tests/test_hub.py checks that they agree). A pipeline repository's other folders
# (safety_checker, feature_extractor, ...) are not downloaded.
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# The manifest of a Flax model directory (rewardedit_jax.convert.model_dir.MODEL_FILE).
FLAX_MANIFEST = "rewardedit_model.json"
# Weight files, in the order rewardedit_jax.convert.weights.find_weight_files prefers them.
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Configs (config.json, scheduler_config.json, model_index.json, shard indexes) and tokenizer files
# (vocab.json, merges.txt, tokenizer.json, ...): small, all kept.
TEXT_SUFFIXES = (".json", ".txt")

# Hub names: letters, digits, '-', '_' and '.', not starting or ending with '-' or '.'; a revision is a
# branch, tag (both may hold '/', e.g. refs/pr/1) or commit hash.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"({_NAME}/{_NAME})(?:@([A-Za-z0-9_][A-Za-z0-9._/+-]*))?")
_MAX_ID_LENGTH = 96  # huggingface_hub's limit on repository ids


class HubError(PathError):
    """A Hugging Face Hub id cannot be resolved; the message is one line naming the id and the reason."""


@dataclasses.dataclass(frozen=True)
class HubModel:
    """A resolved Hub id: the repository, the revision asked for, the commit found and its local folder."""

    repo_id: str
    revision: str | None  # as given; None: the default branch
    commit: str
    folder: str  # the snapshot folder in the Hugging Face cache

    @property
    def pinned(self) -> str:
        """``owner/name@commit``: the id that names the same files wherever it is resolved again."""
        return f"{self.repo_id}@{self.commit}"


def _log(message: str) -> None:
    print(f"hub: {message}", file=sys.stderr, flush=True)


def parse_hub_id(path: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo id, revision or None)`` when ``path`` is a Hub id (module docstring), else None.

    Only a ``str`` can be one: a :class:`os.PathLike` is a path by construction.
    """
    if not isinstance(path, str) or is_remote(path) or os.path.exists(path):
        return None
    match = _HUB_ID.fullmatch(path)
    if match is None:
        return None
    repo_id, revision = match.groups()
    if len(repo_id) > _MAX_ID_LENGTH or "--" in repo_id or ".." in repo_id:
        return None
    if revision is not None and (".." in revision or revision.endswith(("/", "."))):
        return None
    return repo_id, revision


def _weights(files: list[str]) -> list[str]:
    """The weight files of one folder the loader reads: plain safetensors (one file or shards), else plain
    ``.bin``, else the variants (``*.fp16.safetensors``, ...) of the first kind present."""
    for suffix in WEIGHT_SUFFIXES:
        plain = [f for f in files if f.endswith(suffix) and "." not in f[: -len(suffix)]]
        if plain:
            return plain
    for suffix in WEIGHT_SUFFIXES:
        variants = [f for f in files if f.endswith(suffix)]
        if variants:
            return variants
    return []


def pipeline_files(names: Iterable[str]) -> list[str]:
    """The files of a repository (its listing, paths relative to its root) that loading it as a model needs,
    sorted (module docstring)."""
    names = set(names)
    if FLAX_MANIFEST in names:  # Orbax checkpoints: every file under the components
        top = [n for n in names if "/" not in n and n.endswith(".json")]
        return sorted(top + [n for n in names if n.split("/")[0] in COMPONENTS])
    by_folder: dict[str, list[str]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        if folder == "" or folder in COMPONENTS:
            by_folder.setdefault(folder, []).append(base)
    pipeline = "model_index.json" in names
    keep = []
    for folder, files in by_folder.items():
        prefix = f"{folder}/" if folder else ""
        keep += [prefix + f for f in files if f.endswith(TEXT_SUFFIXES)]
        if folder or not pipeline:  # weights at the top of a pipeline are single-file checkpoints
            keep += [prefix + f for f in _weights(files)]
    return sorted(keep)


def _token() -> str | bool:
    """``HF_TOKEN`` from the environment, else False: huggingface_hub then sends no token at all, not even
    one saved on disk."""
    return os.environ.get("HF_TOKEN") or False


def _size(num_bytes: int) -> str:
    if num_bytes >= 10**9:
        return f"{num_bytes / 10**9:.2f} GB"
    return f"{num_bytes / 10**6:.1f} MB"


def _short(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) < 200 else text[:197] + "..."


def _reason(error: BaseException, revision: str | None) -> str:
    """Why the Hub did not give the model, in words."""
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return "a gated model: accept its conditions on huggingface.co and set HF_TOKEN"
    if isinstance(error, errors.RepositoryNotFoundError):
        return "not found on the Hugging Face Hub (a private model needs HF_TOKEN)"
    if isinstance(error, errors.RevisionNotFoundError):
        return f"revision {revision!r} not found on the Hugging Face Hub"
    if isinstance(error, errors.HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return f"the Hugging Face Hub answered HTTP {status}" if status else f"Hub error ({_short(error)})"
    return f"cannot reach the Hugging Face Hub ({_short(error)})"


_RESOLVED: dict[tuple[str, str | None, str], HubModel] = {}


def fetch(repo_id: str, revision: str | None = None, *, log: Callable[[str], None] | None = None) -> HubModel:
    """Download (or find in the cache) what a model needs of ``repo_id`` at ``revision``."""
    from huggingface_hub import constants

    log = log or _log
    spec = repo_id if revision is None else f"{repo_id}@{revision}"
    cache = os.path.abspath(os.path.expanduser(constants.HF_HUB_CACHE))
    key = (repo_id, revision, cache)
    if key in _RESOLVED:
        return _RESOLVED[key]
    if constants.HF_HUB_OFFLINE:
        folder = _from_cache(spec, repo_id, revision, cache, log)
    else:
        folder = _download(spec, repo_id, revision, cache, log)
    commit = os.path.basename(os.path.normpath(folder))
    model = HubModel(repo_id=repo_id, revision=revision, commit=commit, folder=folder)
    log(f"{spec} is commit {commit} ({folder})")
    _RESOLVED[key] = _RESOLVED[(repo_id, commit, cache)] = model
    return model


def _download(spec: str, repo_id: str, revision: str | None, cache: str, log) -> str:
    import huggingface_hub as hf
    from huggingface_hub import errors

    try:
        info = hf.HfApi(token=_token()).model_info(repo_id, revision=revision, files_metadata=True)
    except errors.RevisionNotFoundError as e:
        raise HubError(f"{spec}: {_reason(e, revision)}") from None
    except Exception as e:  # not found, gated, no network, the Hub down: the cache may hold it all the same
        return _from_cache(spec, repo_id, revision, cache, log, hub_error=e)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    files = pipeline_files(sizes)
    if not files:
        raise HubError(f"{spec}: the repository holds no model files (no configs, no weights)")
    missing = [
        f
        for f in files
        if not isinstance(hf.try_to_load_from_cache(repo_id, f, cache_dir=cache, revision=info.sha), str)
    ]
    total = sum(sizes[f] for f in missing)
    if missing:
        log(
            f"downloading {spec} (revision {revision or 'main'}, commit {info.sha}): "
            f"{len(missing)} files, {_size(total)}, into {cache}"
        )
    start = time.perf_counter()
    try:
        folder = hf.snapshot_download(
            repo_id, revision=revision, cache_dir=cache, allow_patterns=files, token=_token()
        )
    except Exception as e:
        reason = _reason(e, revision) if isinstance(e, errors.HfHubHTTPError) else _short(e)
        raise HubError(f"{spec}: download failed ({reason})") from None
    if missing:
        log(f"downloaded {spec} in {time.perf_counter() - start:.1f} s ({_size(total)})")
    return folder


def _from_cache(
    spec: str, repo_id: str, revision: str | None, cache: str, log, *, hub_error: Exception | None = None
) -> str:
    """The snapshot folder of ``repo_id`` at ``revision`` in the local cache: offline, or when the Hub did not
    give it (``hub_error``)."""
    import huggingface_hub as hf
    from huggingface_hub import errors

    if hub_error is None:
        why = f"not in the local Hugging Face cache {cache} and HF_HUB_OFFLINE=1 is set"
    elif isinstance(hub_error, errors.HfHubHTTPError):  # the Hub answered: its answer is the reason
        why = _reason(hub_error, revision)
    else:
        why = f"{_reason(hub_error, revision)}, and it is not in the local Hugging Face cache {cache}"

    # The same files a download would select, so that huggingface_hub's completeness check (against the
    # repository listing it caches with a download) asks for no others.
    files = None
    cached_tree = getattr(hf, "get_cached_repo_tree", None)  # huggingface_hub >= 2
    if cached_tree is not None:
        try:
            files = pipeline_files(f.path for f in cached_tree(repo_id, revision=revision, cache_dir=cache))
        except Exception:  # no listing cached: huggingface_hub checks nothing either
            files = None
    try:
        folder = hf.snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=True, allow_patterns=files
        )
    except errors.LocalEntryNotFoundError as e:
        snapshot = getattr(e, "snapshot_path", None)  # an incomplete snapshot: the loader names what it lacks
        if snapshot and os.path.isdir(snapshot):
            log(f"{spec}: the cached snapshot lacks files a download would fetch; using it as it is")
            return snapshot
        raise HubError(f"{spec}: no such local folder, and {why}") from None
    except Exception as e:
        raise HubError(f"{spec}: cannot read the local Hugging Face cache {cache} ({_short(e)})") from None
    if hub_error is not None:
        log(f"{spec}: {_reason(hub_error, revision)}; using the local Hugging Face cache")
    return folder


def resolve(path: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> HubModel | None:
    """The resolved model when ``path`` is a Hub id (downloaded or found in the cache), else None."""
    parsed = parse_hub_id(path)
    return None if parsed is None else fetch(*parsed, log=log)


def local_folder(path: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> str | os.PathLike:
    """``path`` as something the loaders read: a Hub id's local snapshot folder, any other path unchanged."""
    model = resolve(path, log=log)
    return path if model is None else model.folder
