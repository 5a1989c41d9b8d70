"""Local paths and remote URLs (``gs://``, ``s3://``, ...) alike: every file the package reads or writes.

User strings become :class:`etils.epath.Path` through :func:`to_path`, which takes the object-store URL
schemes epath knows (``gs``, ``s3``, ``az``) and refuses any other ``scheme://`` instead of letting it
become a local folder named ``scheme:``. epath reads remote URLs through ``tf.io.gfile`` when TensorFlow is
installed and through fsspec (``gcsfs``, ``s3fs``) otherwise or with ``EPATH_USE_TF=false``.

Object stores have no directories, no rename and no append, so:

- :func:`atomic_write_bytes` writes a local file through a temporary sibling and ``os.replace``; a remote
  object is uploaded from memory as one upload. An object store publishes an object only when its upload
  completes (GCS and S3 both), so a reader sees the old object or the whole new one, never a part; a
  temporary object plus a rename would be no better there, as a rename is a copy and a delete.
- :func:`atomic_directory` builds a folder in a temporary directory: a local sibling renamed into place,
  or, for a remote destination, a local directory uploaded when the block succeeds, the files at the
  top level last. Every folder written this way is recognised by a top-level manifest
  (``rewardedit_model.json``, ``cache_info.json``, ``model_index.json``), so a reader never takes a
  partly uploaded folder for a complete one.
- :class:`AppendFile` appends to a local file in place, and rewrites a remote object with everything
  written so far, at most every ``flush_interval_s`` seconds and on close.
- :func:`local_copy` downloads a remote file or folder for libraries that read only local files
  (transformers tokenizers, safetensors, ``torch.load``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from etils import epath

# The object-store URL schemes etils.epath reads and writes (with TensorFlow or the matching fsspec package).
REMOTE_SCHEMES = ("gs", "s3", "az")
# The remote schemes Orbax checkpoints may live under: Orbax picks tensorstore's kvstore driver from the
# path and maps only gs:// to a remote one (any other path goes to the local-file driver).
CHECKPOINT_SCHEMES = ("gs",)
# How often an AppendFile rewrites its remote object at most (seconds).
REMOTE_FLUSH_INTERVAL_S = 30.0

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 1 << 24


class PathError(Exception):
    """A path cannot be used or a file cannot be read or written; the message is one line naming it."""


class ConversionError(PathError):
    """A model folder, weight file or checkpoint cannot be read as a model; the message is one line naming
    the input. Defined here, below the converters and the training workdir, which both raise it."""


def _one_line(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) < 300 else text[:297] + "..."


def scheme_of(path: str | os.PathLike) -> str | None:
    """The URL scheme of ``path`` (``gs``, ``s3``, ...), or None for a local path."""
    match = _URL.match(os.fspath(path))
    return match.group(1).lower() if match else None


def is_remote(path: str | os.PathLike) -> bool:
    return scheme_of(path) is not None


def to_path(path: str | os.PathLike, *, expanduser: bool = False) -> epath.Path:
    """``path`` (a local path or a remote URL) as an :class:`epath.Path`; ``expanduser`` expands ``~``.

    Raises :class:`PathError` for a URL scheme epath cannot read.
    """
    text = os.fspath(path)
    scheme = scheme_of(text)
    if scheme is None:
        return epath.Path(os.path.expanduser(text) if expanduser else text)
    if scheme not in REMOTE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        raise PathError(f"{text}: unsupported URL scheme {scheme}:// (use a local path or {supported})")
    return epath.Path(text)


def absolute(path: str | os.PathLike) -> epath.Path:
    """``path`` made absolute (a remote URL already is; epath would prefix it with the working directory)."""
    path = to_path(path)
    return path if is_remote(path) else epath.Path(os.path.abspath(path))


def resolve(path: str | os.PathLike) -> epath.Path:
    """``path`` absolute with symbolic links resolved (a remote URL is returned as is)."""
    path = to_path(path)
    return path if is_remote(path) else epath.Path(os.path.realpath(path))


def bucket_url(path: str | os.PathLike) -> str | None:
    """``scheme://bucket`` of a remote URL, or None for a local path."""
    text = os.fspath(path)
    scheme = scheme_of(text)
    if scheme is None:
        return None
    bucket = text[len(scheme) + 3 :].split("/", 1)[0]
    if not bucket:
        raise PathError(f"{text}: the URL names no bucket")
    return f"{scheme}://{bucket}"


def check_bucket(path: str | os.PathLike) -> None:
    """Fail with one line naming ``path`` unless its bucket exists and is readable (no-op when local)."""
    to_path(path)  # refuses unknown schemes
    bucket = bucket_url(path)  # of the string as given: epath reads gs:///x as gs://x
    if bucket is None:
        return
    try:
        found = epath.Path(bucket).exists()
    except Exception as e:  # the backends raise their own types for credentials, network, permissions
        raise PathError(f"{os.fspath(path)}: cannot reach bucket {bucket} ({_one_line(e)})") from None
    if not found:
        raise PathError(f"{os.fspath(path)}: bucket {bucket} does not exist")


def checkpoint_dir(path: str | os.PathLike) -> epath.Path:
    """``path`` as an absolute folder Orbax can write checkpoints under: local, or gs:// in a bucket that
    exists."""
    path = absolute(path)
    scheme = scheme_of(path)
    if scheme is not None and scheme not in CHECKPOINT_SCHEMES:
        raise PathError(
            f"{path}: Orbax checkpoints can live only on a local path or gs:// (tensorstore has no "
            f"{scheme}:// driver mapping in Orbax)"
        )
    check_bucket(path)
    return path


def makedirs(path: str | os.PathLike) -> epath.Path:
    """Create the local folder ``path`` (and its parents); for a remote URL only check its bucket, since
    object stores have no folders (and fsspec's makedirs would create a missing bucket)."""
    path = to_path(path)
    if is_remote(path):
        check_bucket(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
    return path


def walk(path: str | os.PathLike) -> Iterator[tuple[epath.Path, list[str], list[str]]]:
    """``(folder, subfolder names, file names)`` for every folder under ``path``, like ``os.walk``.

    ``epath.Path.walk`` loses the URL scheme of the folders it yields on the fsspec backend (fsspec walks
    protocol-less paths), which would turn them into local paths; this puts it back.
    """
    path = to_path(path)
    scheme = scheme_of(path)
    for folder, dirs, files in path.walk():
        text = os.fspath(folder)
        if scheme is not None and scheme_of(text) is None:
            folder = epath.Path(f"{scheme}://{text.lstrip('/')}")
        yield folder, dirs, files


# --- whole files ------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or all of the new (module docstring)."""
    path = to_path(path)
    if is_remote(path):
        try:
            with path.open("wb") as f:
                f.write(data)
        except Exception as e:
            raise PathError(f"{path}: cannot write ({_one_line(e)})") from None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of the file ``path``; a missing or unreadable file is a one-line :class:`PathError`."""
    path = to_path(path)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise PathError(f"{path}: file not found") from None
    except Exception as e:
        raise PathError(f"{path}: cannot read ({_one_line(e)})") from None


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object file; a missing file, malformed JSON or another value is a one-line PathError."""
    path = to_path(path)
    if not path.is_file():
        raise PathError(f"{path}: file not found")
    try:
        data = json.loads(read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PathError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise PathError(f"{path}: expected a JSON object")
    return data


def write_json(path: str | os.PathLike, data: Any, *, sort_keys: bool = True) -> None:
    """``data`` as indented JSON (keys sorted unless told otherwise) and a final newline, written
    atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


class AppendFile:
    """A file opened for appending that also works on object stores (which cannot append).

    Local: appended to in place, each :meth:`flush` reaching the operating system. Remote: the existing
    object and everything written are kept in memory and the object is rewritten whole by :meth:`flush`,
    at most every ``flush_interval_s`` seconds, and by :meth:`close` (so a crash loses at most that many
    seconds of lines, which a local file would not). ``write`` takes ``str`` (UTF-8) or ``bytes``.
    """

    def __init__(self, path: str | os.PathLike, *, flush_interval_s: float = REMOTE_FLUSH_INTERVAL_S):
        self.path = to_path(path)
        self.remote = is_remote(self.path)
        self._interval = flush_interval_s
        if self.remote:
            check_bucket(self.path)
            self._content = bytearray(read_bytes(self.path) if self.path.is_file() else b"")
            self._dirty, self._uploaded_at = False, None
            self.at_line_start = not self._content or self._content.endswith(b"\n")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.at_line_start = True
            if self.path.is_file() and os.path.getsize(self.path):
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    self.at_line_start = f.read(1) == b"\n"
            self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())

    def write(self, data: str | bytes) -> None:
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if self.remote:
            self._content += data
            self._dirty = True
        else:
            self._file.write(data)

    def flush(self, *, force: bool = False) -> None:
        if not self.remote:
            self._file.flush()
            return
        now = time.monotonic()
        due = self._uploaded_at is None or now - self._uploaded_at >= self._interval
        if self._dirty and (force or due):
            atomic_write_bytes(self.path, bytes(self._content))
            self._dirty, self._uploaded_at = False, now

    def close(self) -> None:
        if self.remote:
            self.flush(force=True)
        elif not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- folders ----------------------------------------------------------------------------------------------


def _upload_tree(src: pathlib.Path, dst: epath.Path) -> None:
    """Copy the local folder ``src`` to the remote prefix ``dst``: nested files first, top-level last."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    files.sort(key=lambda p: len(p.relative_to(src).parts) == 1)
    for file in files:
        target = dst / file.relative_to(src).as_posix()
        try:
            with open(file, "rb") as f, target.open("wb") as out:
                shutil.copyfileobj(f, out, _CHUNK)
        except Exception as e:
            raise PathError(f"{target}: cannot write ({_one_line(e)})") from None


@contextlib.contextmanager
def atomic_directory(dst: str | os.PathLike, *, overwrite: bool = False) -> Iterator[epath.Path]:
    """Yield a temporary local directory that becomes ``dst`` only if the block succeeds.

    On any error the temporary directory is removed and ``dst`` is untouched (no partial output). A remote
    ``dst`` is replaced when the block succeeds: the old folder deleted, the new one uploaded with its
    top-level files last (module docstring).
    """
    dst = to_path(dst)
    if is_remote(dst):
        check_bucket(dst)
    if dst.exists() and not overwrite:
        raise PathError(f"{dst}: output already exists (pass --overwrite to replace it)")
    if is_remote(dst):
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{dst.name}.tmp-"))
        try:
            yield epath.Path(tmp)
            if dst.exists():
                dst.rmtree()
            _upload_tree(tmp, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield epath.Path(tmp)
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _download(src: epath.Path, dst: pathlib.Path) -> None:
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _download(child, dst / child.name)
        return
    with src.open("rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, _CHUNK)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A local path holding the file or folder ``path``: itself when local, else a temporary download
    (deleted on exit), for libraries that read only local files. Meant for small inputs (tokenizers,
    configs, weight files read once)."""
    path = to_path(path)
    if not is_remote(path):
        yield pathlib.Path(path)
        return
    if not path.exists():
        raise PathError(f"{path}: not found")
    with tempfile.TemporaryDirectory(prefix="rewardedit-remote-") as tmp:
        local = pathlib.Path(tmp) / path.name
        try:
            _download(path, local)
        except Exception as e:
            raise PathError(f"{path}: cannot download ({_one_line(e)})") from None
        yield local


def check_creatable(path: str | os.PathLike, what: str, *, file: bool = False) -> None:
    """Raise :class:`PathError`, one line naming ``what`` (the flag) and ``path``, unless
    ``path`` exists or could be created: its nearest existing parent must be a folder this process may
    write in (for a remote URL, its bucket must exist); with ``file``, ``path`` must not be a folder.
    Nothing is created: a command calls this before its expensive work, so that an output that cannot be
    written fails in seconds, not after hours."""
    if is_remote(path):
        check_bucket(path)
        return
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if file and os.path.isdir(target):
        raise PathError(f"{what} {os.fspath(path)}: is a folder; give a file name")
    if os.path.lexists(target):
        return
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise PathError(f"{what} {os.fspath(path)}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"{what} {os.fspath(path)}: cannot be created: no permission to write in {parent}")
