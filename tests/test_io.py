"""rewardedit_jax.io: local paths behave as before; gs:// URLs (a GCS emulator) get the same operations."""

from __future__ import annotations

import json
import os

import pytest
from etils import epath
from fixtures_gcs import GcsEmulator

from rewardedit_jax import io


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator() as emulator:
        yield emulator


def test_urls_keep_their_scheme_and_unknown_schemes_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(io.to_path("gs://bucket/a/b")) == "gs://bucket/a/b"
    assert str(io.absolute("gs://bucket/a")) == "gs://bucket/a"  # epath would prefix the working dir
    assert str(io.absolute("run")) == str(tmp_path / "run")
    assert io.is_remote("s3://bucket/x") and not io.is_remote("/tmp/x") and not io.is_remote("a:b")
    with pytest.raises(io.PathError, match=r"^memory://x: unsupported URL scheme memory:// \(use a local"):
        io.to_path("memory://x")
    with pytest.raises(io.PathError, match=r"^gs:///x: the URL names no bucket$"):
        io.check_bucket("gs:///x")
    with pytest.raises(io.PathError, match=r"^s3://b/ckpt: Orbax checkpoints can live only on a local path"):
        io.checkpoint_dir("s3://b/ckpt")
    assert io.checkpoint_dir("ckpt") == epath.Path(tmp_path / "ckpt")


def test_local_atomic_writes_json_and_append_files(tmp_path):
    path = tmp_path / "a.json"
    io.write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert io.read_json(path) == {"a": [1, 2], "b": 1}
    io.atomic_write_text(path, "[1]")
    with pytest.raises(io.PathError, match=r"a.json: expected a JSON object$"):
        io.read_json(path)
    with pytest.raises(io.PathError, match=r"missing.json: file not found$"):
        io.read_json(tmp_path / "missing.json")
    assert sorted(os.listdir(tmp_path)) == ["a.json"]  # no temporary file left

    log = tmp_path / "logs" / "log.jsonl"
    log.parent.mkdir()
    log.write_text('{"a": 1}\n{"b"')  # a line cut off by a crash
    appender = io.AppendFile(log)
    assert not appender.at_line_start
    appender.write("\n")
    appender.write(b"x\n")
    appender.flush()
    assert log.read_text() == '{"a": 1}\n{"b"\nx\n'  # a local flush reaches the file at once
    appender.close()


def test_local_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    dst = tmp_path / "out"
    with io.atomic_directory(dst) as tmp:
        (tmp / "x.txt").write_text("1")
    assert (dst / "x.txt").read_text() == "1"
    with pytest.raises(io.PathError, match="out: output already exists"):
        with io.atomic_directory(dst):
            pass
    with pytest.raises(RuntimeError):
        with io.atomic_directory(dst, overwrite=True) as tmp:
            (tmp / "y.txt").write_text("2")
            raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["out"] and sorted(os.listdir(dst)) == ["x.txt"]
    with io.atomic_directory(dst, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert sorted(os.listdir(dst)) == ["y.txt"]


def test_remote_files_json_and_local_copies(gcs, tmp_path):
    url = gcs.url("io/files/a.json")
    io.write_json(url, {"a": 1})
    assert io.read_json(url) == {"a": 1}
    assert gcs.objects("io/files/") == ["io/files/a.json"]
    with pytest.raises(io.PathError, match=rf"^{gcs.url('io/files/b.json')}: file not found$"):
        io.read_json(gcs.url("io/files/b.json"))
    with pytest.raises(
        io.PathError, match=r"^gs://no-such-bucket/x: bucket gs://no-such-bucket does not exist$"
    ):
        io.makedirs("gs://no-such-bucket/x")
    io.atomic_write_text(gcs.url("io/files/sub/c.txt"), "c")
    found = {str(folder / name) for folder, _, files in io.walk(gcs.url("io/files")) for name in files}
    assert found == {gcs.url("io/files/a.json"), gcs.url("io/files/sub/c.txt")}
    with io.local_copy(gcs.url("io/files")) as local:
        assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
            "a.json",
            "sub/c.txt",
        ]
        assert json.loads((local / "a.json").read_text()) == {"a": 1}
    assert not local.exists()  # the download is temporary
    with io.local_copy(tmp_path) as same:
        assert same == tmp_path


def test_remote_append_file_rewrites_the_object_keeping_what_was_there(gcs):
    url = gcs.url("io/append/metrics.jsonl")
    epath.Path(url).write_text("1\n2")  # ends mid-line
    appender = io.AppendFile(url, flush_interval_s=3600)
    assert not appender.at_line_start
    appender.write("\n3\n")
    appender.flush()  # the first flush uploads
    assert epath.Path(url).read_text() == "1\n2\n3\n"
    appender.write("4\n")
    appender.flush()  # within the interval: kept in memory
    assert epath.Path(url).read_text() == "1\n2\n3\n"
    appender.close()
    assert epath.Path(url).read_text() == "1\n2\n3\n4\n"
    assert gcs.objects("io/append/") == ["io/append/metrics.jsonl"]


def test_remote_atomic_directory_uploads_on_success_only(gcs):
    dst = gcs.url("io/dir/model")
    with pytest.raises(RuntimeError):
        with io.atomic_directory(dst) as tmp:
            (tmp / "manifest.json").write_text("{}")
            raise RuntimeError
    assert gcs.objects("io/dir/") == []
    with io.atomic_directory(dst) as tmp:
        assert not io.is_remote(tmp)  # built locally (writers such as Orbax or safetensors need files)
        (tmp / "unet").mkdir()
        (tmp / "unet" / "config.json").write_text("{}")
        (tmp / "manifest.json").write_text("{}")
    assert not tmp.exists()
    assert gcs.objects("io/dir/") == ["io/dir/model/manifest.json", "io/dir/model/unet/config.json"]
    with pytest.raises(io.PathError, match="output already exists"):
        with io.atomic_directory(dst):
            pass
    with io.atomic_directory(dst, overwrite=True) as tmp:
        (tmp / "other.json").write_text("{}")
    assert gcs.objects("io/dir/") == ["io/dir/model/other.json"]  # the old folder is gone, not merged
