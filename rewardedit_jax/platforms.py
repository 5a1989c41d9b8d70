"""What the command-line tools set up before they start work: which JAX backends jax may probe, which
library logs they show, and the check that an output path can be created at all.

With ``libtpu`` installed (the ``tpu`` extra, needed to compile for TPU topologies from any machine), jax
tries to start a TPU backend whenever ``JAX_PLATFORMS`` is unset, even on machines without a TPU: libtpu
then logs host-bound and worker-hostname errors and jax warns that the backend failed, on every run.
:func:`skip_absent_tpu` keeps that probe away from machines that have no TPU, before jax starts a backend.
"""

from __future__ import annotations

import importlib.util
import logging
import os


def tpu_chips() -> int:
    """TPU chips on this machine's PCI bus (1 when jax cannot tell)."""
    try:
        from jax._src import hardware_utils  # the PCI scan jax itself runs before loading libtpu
    except ImportError:  # a jax without it: assume TPUs may be present, change nothing
        return 1
    return hardware_utils.num_available_tpu_chips_and_device_id()[0]


def _gpu_plugin_or_device() -> bool:
    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin")
    if any(importlib.util.find_spec(m) for m in plugins):
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def has_accelerator() -> bool:
    """A TPU chip on the PCI bus, or a GPU device or jax GPU plugin."""
    return tpu_chips() > 0 or _gpu_plugin_or_device()


def skip_absent_tpu() -> None:
    """Set ``JAX_PLATFORMS=cpu`` when jax would probe an absent TPU (libtpu installed, no TPU chip on
    the PCI bus, no GPU) and the user chose no platforms. Call before jax initializes a backend."""
    if os.environ.get("JAX_PLATFORMS"):
        return
    if importlib.util.find_spec("libtpu") is None or _gpu_plugin_or_device():
        return
    if tpu_chips() == 0:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        import jax  # imported by the PCI scan: its config read the environment already

        jax.config.update("jax_platforms", "cpu")


def quiet_library_logs() -> None:
    """absl's INFO lines off, and TensorFlow's C++ log (TFDS imports TensorFlow when it is installed) below
    errors: a command's own progress lines are what its user reads."""
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
