"""``python -m rewardedit_jax.aot --config CONFIG [--topology NAME] [--num-slices K] [--config.key=value]``.

Compiles a training config's exact train step (``rewardedit_jax.training.builder``: the trainer's step,
shardings and donation) ahead of time, for a TPU slice from any machine (``--topology v5e-16``, ``v5p-8``,
``v4-32``, ``v6e-8``, ``v5e:4x4``; with ``--num-slices K`` a multi-slice job) or for this machine's devices
(no ``--topology``), and prints what a run would meet before anyone rents the hardware: the mesh, the
global and per-chip batch, memory per chip against the chip's HBM, TFLOP per step per chip, the bytes of
each collective kind per step, and a step-time estimate at a stated share of peak (``--utilization``).

Exit status: 0 when the step fits, 1 when it does not (the message says by how much; the train state
alone is checked before compiling, since a full-size compile takes many minutes on a small machine),
2 for bad input. ``--json PATH`` also writes the report as JSON. Compiling for a TPU needs ``libtpu``
(``pip install 'rewardedit-jax[tpu]'``); docs/scaling.md has measured reports and their compile times.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import flags
from ml_collections import config_flags

from rewardedit_jax.io import check_creatable

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_TOPOLOGY = flags.DEFINE_string(
    "topology",
    None,
    "TPU slice to compile for (v5e-16, v5p-8, v4-32, v6e-8, v5e:4x4); default: local devices",
)
_NUM_SLICES = flags.DEFINE_integer("num-slices", 1, "Slices of --topology joined over DCN (multi-slice).")
_UTILIZATION = flags.DEFINE_float(
    "utilization", 0.4, "Share of the chip's peak bf16 FLOP/s assumed for the step-time estimate."
)
_PEAK = flags.DEFINE_float(
    "peak-tflops", None, "Peak TFLOP/s per device (default: the TPU chip's bf16 peak)."
)
_HBM = flags.DEFINE_float("hbm-gib", None, "Memory per device in GiB (default: the chip's HBM).")
_JSON = flags.DEFINE_string("json", None, "Also write the report here (JSON).")

GiB = 1024**3
EXIT_DOES_NOT_FIT = 1
EXIT_BAD_INPUT = 2


class DoesNotFit(Exception):
    """The step (or its state alone) needs more memory per device than the device has."""


def _gib(n: float | None) -> str:
    """Bytes in GiB, or MiB below 1 GiB."""
    if n is None:
        return "n/a"
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / 1024**2:.2f} MiB"


def _local_device_memory(device) -> int | None:
    try:
        stats = device.memory_stats() or {}
    except Exception:  # CPU devices report none
        return None
    return stats.get("bytes_limit")


def _quiet(message: str) -> None:
    del message


def compile_report(
    config, *, topology=None, utilization: float = 0.4, peak_tflops=None, hbm_bytes=None, progress=_quiet
):
    """Build, check and compile ``config``'s train step for ``topology`` (a ``Topology``) or the local
    devices; returns the report dict. Raises :class:`DoesNotFit` when the state alone cannot fit."""
    import jax

    from rewardedit_jax.training import analysis, builder
    from rewardedit_jax.training import sharding as shard_lib
    from rewardedit_jax.training.topology import CHIPS
    from rewardedit_jax.training.trainer import check_config

    if topology is not None:
        devices = topology.devices()
        chip = topology.chip
        target = topology.describe()
    else:
        devices = jax.devices()
        chip = next((c for c in CHIPS.values() if c.device_kind == devices[0].device_kind), None)
        target = f"{len(devices)} local {devices[0].device_kind} devices"
        hbm_bytes = hbm_bytes or _local_device_memory(devices[0])
    hbm_bytes = hbm_bytes or (chip.hbm_bytes if chip else None)
    peak_tflops = peak_tflops or (chip.peak_bf16_tflops if chip else None)

    check_config(config, devices)
    plan = shard_lib.plan_mesh(dict(config.mesh), devices)
    mesh = shard_lib.make_mesh(dict(config.mesh), devices)
    step = builder.abstract_train_step(config, mesh)
    latent = bool(config.data.latent_cache)
    n = len(devices)
    report = {
        "target": target,
        "topology": topology.name if topology else None,
        "num_slices": topology.num_slices if topology else 1,
        "devices": n,
        "mesh": dict(zip(shard_lib.MESH_AXES, plan.shape)),
        "mesh_dcn": dict(zip(shard_lib.MESH_AXES, plan.dcn)),
        "mesh_description": plan.describe(),
        "batch": builder.describe_batch(config, mesh),
        "global_batch": config.batch_size,
        "batch_per_device": config.batch_size / (plan.shape[0] * plan.shape[1]),
        "from_latents": latent,
        "resolution": config.data.resolution,
        "hbm_bytes": hbm_bytes,
        "peak_tflops": peak_tflops,
        "utilization": utilization,
        "state_bytes": step.state_bytes_per_device(),
        "state_parts_bytes": {
            part: builder.shard_bytes(step.state[part], step.state_shardings[part])
            for part in ("params", "opt_state", "ema")
            if step.state[part] is not None
        },
        "state_parts_full_bytes": {
            part: builder.shard_bytes(step.state[part])
            for part in ("params", "opt_state", "ema")
            if step.state[part] is not None
        },
        "frozen_bytes": step.frozen_bytes_per_device(),
    }
    held = report["state_bytes"] + report["frozen_bytes"]
    if hbm_bytes and held > hbm_bytes:
        raise DoesNotFit(
            f"the train state alone needs {_gib(report['state_bytes'])} per device "
            f"(+ {_gib(report['frozen_bytes'])} of frozen encoders), more than the "
            f"{_gib(hbm_bytes)} a device has, "
            f"by {_gib(held - hbm_bytes)}: "
            "shard it over more devices (config.mesh.fsdp) or shrink the model; nothing was compiled"
        )
    progress(
        f"{plan.describe()}; train state {_gib(report['state_bytes'])} per device; lowering the train step"
    )
    t0 = time.perf_counter()
    lowered = step.lower()
    report["lower_s"] = time.perf_counter() - t0
    progress(f"lowered in {report['lower_s']:.1f} s; compiling (a full-size step takes many minutes)")
    t0 = time.perf_counter()
    compiled = lowered.compile()
    report["compile_s"] = time.perf_counter() - t0
    report["memory"] = analysis.compiled_memory(compiled)
    report["flops_per_device"] = analysis.cost_flops(compiled)
    report["collectives"] = analysis.collective_traffic(compiled.as_text())
    total = (report["memory"] or {}).get("total_bytes")
    report["fits"] = None if (total is None or not hbm_bytes) else total <= hbm_bytes
    progress("counting the step's model FLOPs on the unpartitioned program")
    model = model_flops(config)
    report["model_flops_per_device"] = None if model is None else model / n
    flops = report["model_flops_per_device"] or report["flops_per_device"]
    if flops and peak_tflops:
        step_s = flops / (peak_tflops * 1e12 * utilization)
        report["estimate"] = {
            "step_s": step_s,
            "images_per_s": config.batch_size / step_s,
            "images_per_s_per_device": config.batch_size / step_s / n,
        }
    return report


def model_flops(config) -> float | None:
    """FLOPs of one train step over the whole global batch, counted by XLA on the program before SPMD
    partitioning and backend fusion (lowered for one CPU device; nothing is compiled).

    The estimate uses this count: the TPU compiler's own cost analysis of the partitioned program counts
    fused convolutions differently (docs/scaling.md compares the two)."""
    import jax

    from rewardedit_jax.training import analysis, builder
    from rewardedit_jax.training import sharding as shard_lib

    single = config.copy_and_resolve_references()
    with single.unlocked():
        for axis in (*shard_lib.MESH_AXES, *shard_lib.DCN_AXES):
            single.mesh[axis] = 1
    cpu = jax.devices("cpu")[:1]
    mesh = shard_lib.make_mesh(dict(single.mesh), cpu)
    return analysis.cost_flops(builder.abstract_train_step(single, mesh).lower())


def format_report(report: dict, config_path: str) -> str:
    lines = [f"{config_path} on {report['target']}"]
    lines.append(f"{report['mesh_description']}; {report['batch']}")
    src = "latents" if report["from_latents"] else "images"
    lines[-1] += f" ({report['resolution']} px {src})"
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in report["state_parts_bytes"].items())
    lines.append(
        f"train state per device {_gib(report['state_bytes'])} ({parts}); "
        f"frozen inputs {_gib(report['frozen_bytes'])}"
    )
    lines.append(f"lowered in {report['lower_s']:.1f} s, compiled in {report['compile_s']:.1f} s")
    m = report["memory"]
    if m:
        verdict = ""
        if report["fits"] is not None:
            room = report["hbm_bytes"] - m["total_bytes"]
            verdict = (
                f" of {_gib(report['hbm_bytes'])}: fits ({_gib(room)} free)"
                if report["fits"]
                else f" of {_gib(report['hbm_bytes'])}: DOES NOT FIT (over by {_gib(-room)})"
            )
        lines.append(
            f"memory per device: arguments {_gib(m['argument_bytes'])}, outputs {_gib(m['output_bytes'])} "
            f"(aliased {_gib(m['alias_bytes'])}), temporaries {_gib(m['temp_bytes'])}, code "
            f"{_gib(m['code_bytes'])}; total {_gib(m['total_bytes'])}{verdict}"
        )
    model, compiled = report.get("model_flops_per_device"), report["flops_per_device"]
    if model or compiled:
        work = [f"{model / 1e12:.3f} TFLOP per step (model FLOPs / devices)"] if model else []
        if compiled:
            work.append(f"{compiled / 1e12:.3f} TFLOP per step by the compiled program's cost analysis")
        lines.append("work per device: " + "; ".join(work))
    coll = [
        f"{kind} {v['count']} ops {_gib(v['bytes'])}"
        for kind, v in report["collectives"].items()
        if v["count"]
    ]
    lines.append("collectives per device per step: " + (", ".join(coll) or "none"))
    est = report.get("estimate")
    if est:
        lines.append(
            f"estimate at {100 * report['utilization']:.0f}% of {report['peak_tflops']:g} TFLOP/s: "
            f"{1e3 * est['step_s']:.1f} ms per step, "
            f"{est['images_per_s_per_device']:.1f} images/s per device, "
            f"{est['images_per_s']:.0f} images/s in all"
        )
    return "\n".join(lines)


def main(argv) -> int:
    del argv
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s] %(message)s", stream=sys.stderr
    )
    if _TOPOLOGY.value:
        # The target's devices come from libtpu's topology description; jax itself runs on the CPU here.
        import jax

        jax.config.update("jax_platforms", os.environ.setdefault("JAX_PLATFORMS", "cpu"))
    from rewardedit_jax.io import PathError
    from rewardedit_jax.training.sharding import ConfigError
    from rewardedit_jax.training.topology import TopologyError, parse_topology

    try:
        if _JSON.value:  # written after the compile, which takes minutes at full size
            check_creatable(_JSON.value, "--json", file=True)
        topology = parse_topology(_TOPOLOGY.value, _NUM_SLICES.value) if _TOPOLOGY.value else None
        if _NUM_SLICES.value != 1 and topology is None:
            raise TopologyError("--num-slices needs --topology")
        if not 0 < _UTILIZATION.value <= 1:
            raise TopologyError(f"--utilization must be in (0, 1], got {_UTILIZATION.value}")
        report = compile_report(
            _CONFIG.value,
            topology=topology,
            utilization=_UTILIZATION.value,
            peak_tflops=_PEAK.value,
            hbm_bytes=_HBM.value * GiB if _HBM.value else None,
            progress=lambda message: print(f"[aot {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr),
        )
    except (ConfigError, PathError, TopologyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DoesNotFit as e:
        print(f"does not fit: {e}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    print(format_report(report, config_file))
    if _JSON.value:
        from rewardedit_jax.io import write_json

        write_json(_JSON.value, {"config_file": config_file, **report})
    if report["fits"] is False:
        over = report["memory"]["total_bytes"] - report["hbm_bytes"]
        print(f"does not fit: the step needs {_gib(over)} more per device than it has", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


if __name__ == "__main__":
    from rewardedit_jax import config_cli

    config_cli.run(main, ("config",))
